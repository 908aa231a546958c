use super::*;

fn vhost(name: &str, domains: &[&str], marker: &str) -> VirtualHost {
    VirtualHost {
        name: name.to_owned(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        request_headers_to_remove: vec![marker.to_owned()],
        ..Default::default()
    }
}

/// The marker of the virtual host serving `host` in `v`.
fn marker(v: &VirtualHosts, host: &str) -> String {
    let (_, e) = v.resolve(host).unwrap();
    VirtualHost::decode(e.as_ref())
        .unwrap()
        .request_headers_to_remove[0]
        .clone()
}

#[test]
fn resolves_every_domain_and_nothing_else() {
    let mut b = VirtualHostsBuilder::new("http_proxy");
    b.push(&vhost(
        "a.ns.svc.cluster.local:80",
        &["a.ns:80", "a.ns", "a:80"],
        "",
    ));
    b.push(&vhost(
        "b.ns.svc.cluster.local:9080",
        &["b:9080", "b.ns:9080"],
        "",
    ));
    let vhosts = b.finish();
    for (host, name) in [
        ("a.ns", "http_proxy/a.ns.svc.cluster.local:80"),
        ("a:80", "http_proxy/a.ns.svc.cluster.local:80"),
        ("b.ns:9080", "http_proxy/b.ns.svc.cluster.local:9080"),
    ] {
        let (got, encoded) = vhosts.resolve(host).expect(host);
        assert_eq!(got, name);
        let vh = VirtualHost::decode(encoded.as_ref()).unwrap();
        assert!(vh.domains.iter().any(|d| d == host));
    }
    for host in ["a", "b", "b:80", "c:9080", ""] {
        assert!(vhosts.resolve(host).is_none(), "{host}");
    }
    assert_eq!(vhosts.decode_all().len(), 2);
}

#[test]
fn a_patch_replaces_only_the_named_virtual_hosts() {
    let mut b = VirtualHostsBuilder::new("rc");
    b.push(&vhost("a:80", &["a:80", "a"], "1"));
    b.push(&vhost("b:80", &["b:80", "b"], "1"));
    let v1 = b.finish();
    // Patched again and again: the table stays compact and right.
    let mut v = v1.clone();
    for round in 2..10 {
        v = v
            .patched(&[vhost("b:80", &["b:80", "b"], &round.to_string())])
            .unwrap();
        assert_eq!(marker(&v, "b"), round.to_string());
        assert_eq!(marker(&v, "a"), "1");
        let size = |v: &VirtualHosts| v.base.len() + v.extra.len();
        assert!(size(&v) <= 3 * size(&v1), "{} bytes", size(&v));
        if round == 2 {
            assert_eq!(v.base.as_ptr(), v1.base.as_ptr(), "the base is shared");
        }
    }
    assert_eq!(marker(&v1, "b"), "1", "the predecessor is unchanged");
    assert_eq!(v.decode_all().len(), 2);
    // A virtual host that is not there, or under another name: no patch.
    assert!(v.patched(&[vhost("c:80", &["c:80"], "x")]).is_none());
    assert!(v.patched(&[vhost("z:80", &["a:80"], "x")]).is_none());
}

#[test]
fn a_table_shares_what_another_view_encodes_alike() {
    let mut b = VirtualHostsBuilder::new("rc");
    for name in ["a", "b", "c", "d"] {
        b.push(&vhost(
            &format!("{name}:80"),
            &[&format!("{name}.ns:80")],
            "1",
        ));
    }
    let like = b.finish();
    // Another namespace's view: `b` reached by its short name too.
    let mut b = VirtualHostsBuilder::sharing("rc", like.clone());
    b.push(&vhost("a:80", &["a.ns:80"], "1"));
    let b_here = vhost("b:80", &["b.ns:80", "b:80"], "1");
    b.push(&b_here);
    b.push(&vhost("c:80", &["c.ns:80"], "1"));
    b.push(&vhost("d:80", &["d.ns:80"], "1"));
    let view = b.finish();
    assert_eq!(
        view.base.as_ptr(),
        like.base.as_ptr(),
        "the buffer is shared"
    );
    assert_eq!(
        view.extra.len(),
        b_here.encoded_len(),
        "only `b` is its own"
    );
    assert!(view.resolve("b:80").is_some() && like.resolve("b:80").is_none());
    for host in ["a.ns:80", "b.ns:80", "c.ns:80", "d.ns:80"] {
        assert_eq!(marker(&view, host), "1", "{host}");
    }
    let mut names: Vec<String> = view.decode_all().into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, ["a:80", "b:80", "c:80", "d:80"]);
    // Patched, it still shares, and serves the patch.
    let patched = view.patched(&[vhost("c:80", &["c.ns:80"], "2")]).unwrap();
    assert_eq!(patched.base.as_ptr(), like.base.as_ptr());
    assert_eq!(marker(&patched, "c.ns:80"), "2");
    assert_eq!(marker(&patched, "b:80"), "1");
    // Sharing little, a table lays itself out on its own.
    let mut b = VirtualHostsBuilder::sharing("rc", like.clone());
    for name in ["a", "b", "c"] {
        b.push(&vhost(
            &format!("{name}:80"),
            &[&format!("{name}.ns:80")],
            "3",
        ));
    }
    let apart = b.finish();
    assert_ne!(apart.base.as_ptr(), like.base.as_ptr());
    assert!(apart.extra.is_empty() && apart.wasted() == 0);
    assert_eq!(marker(&apart, "b.ns:80"), "3");
    assert!(apart.resolve("d.ns:80").is_none());
}

fn snapshot(generation: u64, vhosts: &[VirtualHost]) -> Arc<Snapshot> {
    let mut b = VirtualHostsBuilder::new("rc");
    for vh in vhosts {
        b.push(vh);
    }
    let mut s = Snapshot::default();
    s.generation = generation;
    s.vhosts.insert("rc".to_owned(), b.finish());
    Arc::new(s)
}

fn subscribe(names: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: VIRTUAL_HOST.to_owned(),
        resource_names_subscribe: names.iter().map(|n| (*n).to_owned()).collect(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn answers_subscriptions_and_pushes_only_what_changed() {
    let (snap_tx, snapshots) = watch::channel(snapshot(
        1,
        &[
            vhost("a:80", &["a:80", "a"], "1"),
            vhost("b:80", &["b:80", "b"], "1"),
        ],
    ));
    let (tx, mut rx) = mpsc::channel(16);
    let (in_tx, in_rx) = mpsc::channel(16);
    let stream = DeltaStream::new("n".into(), Arc::default(), tx, snapshots);
    let task = tokio::spawn(stream.run(
        subscribe(&["rc/a", "rc/a:80", "rc/nope"], ""),
        tokio_stream::wrappers::ReceiverStream::new(in_rx),
    ));
    let first = rx.recv().await.unwrap().unwrap();
    let names: Vec<(&str, &[String], bool)> = first
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.aliases.as_slice(), r.resource.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "rc/a:80",
                &["rc/a".to_owned(), "rc/a:80".to_owned()][..],
                true
            ),
            ("rc/nope", &["rc/nope".to_owned()][..], false),
        ]
    );
    // ACK, then subscribe to b.
    in_tx.send(Ok(subscribe(&[], &first.nonce))).await.unwrap();
    in_tx.send(Ok(subscribe(&["rc/b"], ""))).await.unwrap();
    let second = rx.recv().await.unwrap().unwrap();
    assert_eq!(second.resources.len(), 1);
    assert_eq!(second.resources[0].name, "rc/b:80");

    // A snapshot with the very same tables (a pod added) sends nothing.
    let same = {
        let mut s = (**snap_tx.borrow()).clone();
        s.generation += 1;
        Arc::new(s)
    };
    snap_tx.send_replace(same);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err());

    // b changes, a does not: only b is sent.
    snap_tx.send_replace(snapshot(
        2,
        &[
            vhost("a:80", &["a:80", "a"], "1"),
            vhost("b:80", &["b:80", "b"], "2"),
        ],
    ));
    let third = rx.recv().await.unwrap().unwrap();
    let sent: Vec<&str> = third.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent, ["rc/b:80"]);
    assert!(third.removed_resources.is_empty());

    // b is deleted: removed, and its alias answered as not found.
    snap_tx.send_replace(snapshot(3, &[vhost("a:80", &["a:80", "a"], "1")]));
    let fourth = rx.recv().await.unwrap().unwrap();
    assert_eq!(fourth.removed_resources, ["rc/b:80"]);
    assert_eq!(fourth.resources.len(), 1);
    assert_eq!(fourth.resources[0].name, "rc/b");
    assert!(fourth.resources[0].resource.is_none());

    // A delta stream for any other type is refused.
    drop(in_tx);
    task.await.unwrap();
    assert!(refuse(&DeltaDiscoveryRequest::default()).is_some());
}
