//! BookInfo's page as the tests read it: which reviews version rendered it,
//! and a signed-in user's session.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{get, send};

pub fn version_of(page: &str) -> &'static str {
    if page.contains("gap-x-1 text-red-500") {
        "v3"
    } else if page.contains("gap-x-1 text-black-500") {
        "v2"
    } else {
        "v1"
    }
}

pub async fn page(gw: SocketAddr, cookie: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let r = get(gw, "/productpage", &headers).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("<title>Simple Bookstore App</title>"),
        "{text}"
    );
    text
}

/// Versions of reviews seen over `n` page loads.
pub async fn versions(gw: SocketAddr, cookie: Option<&str>, n: usize) -> [usize; 3] {
    let mut seen = [0; 3];
    for _ in 0..n {
        match version_of(&page(gw, cookie).await) {
            "v1" => seen[0] += 1,
            "v2" => seen[1] += 1,
            _ => seen[2] += 1,
        }
    }
    seen
}

pub async fn login(gw: SocketAddr, user: &str) -> String {
    let referer = format!("http://{gw}/productpage");
    let r = send(
        gw,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("referer", &referer),
        ],
        Bytes::from(format!("username={user}&passwd=x")),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 302, "{}", r.text());
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}
