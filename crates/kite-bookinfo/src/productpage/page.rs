//! productpage's HTML. The markers tests and users rely on (title, headings,
//! star containers and ids, "Reviews served by:") are kept exactly.

use std::fmt::Write as _;

use serde_json::Value;

use super::Outcome;

const STAR: &str =
    "M12 2l3.09 6.26L22 9.27l-5 4.87 1.18 6.88L12 17.77l-6.18 3.25L7 14.14 2 9.27l6.91-1.01L12 2z";

pub(super) fn landing() -> String {
    let mut html = head("");
    html.push_str(
        r#"<main class="container">
<section class="card">
<p>Hello! This is a simple bookstore application consisting of three services as shown below</p>
<table class="table mt-2">
<tr><th>productpage</th><td>calls details and reviews</td></tr>
<tr><th>details</th><td>book information</td></tr>
<tr><th>reviews</th><td>book reviews; v2 and v3 call ratings</td></tr>
<tr><th>ratings</th><td>book ranking information that accompanies a review</td></tr>
</table>
<p class="mt-2">Click on one of the links below to auto generate a request to the backend as a real user or a tester</p>
<p class="mt-2"><a href="/productpage?u=normal">Normal user</a></p>
<p><a href="/productpage?u=test">Test user</a></p>
</section>
</main>
</body>
</html>
"#,
    );
    html
}

pub(super) fn product(
    product: &Value,
    user: Option<&str>,
    details: &Outcome,
    reviews: &Outcome,
) -> String {
    let mut html = head("<title>Simple Bookstore App</title>\n");
    html.push_str("<nav class=\"nav\">\n<a class=\"brand\" href=\"#\">BookInfo Sample</a>\n<div class=\"user\">\n");
    match user {
        Some(user) => {
            let _ = write!(
                html,
                "<img class=\"avatar\" src=\"static/img/izzy.png\" alt=\"User avatar\">\n<span class=\"user-name\">{}</span>\n<a class=\"btn\" href=\"logout\">Sign out</a>\n",
                escape(user)
            );
        }
        None => html.push_str(
            r#"<details class="signin">
<summary class="btn">Sign in</summary>
<form class="card" method="post" action="login">
<label>User Name <input type="text" name="username" autocomplete="username"></label>
<label>Password <input type="password" name="passwd" autocomplete="current-password"></label>
<button class="btn" type="submit">Sign in</button>
</form>
</details>
"#,
        ),
    }
    html.push_str("</div>\n</nav>\n<main class=\"container\">\n<section class=\"card\">\n");
    let _ = write!(
        html,
        "<h1 class=\"title\">{}</h1>\n<p>{}</p>\n</section>\n<div class=\"grid\">\n",
        escape(text(product, "title")),
        // Trusted: the product catalogue is the app's own data.
        text(product, "descriptionHtml"),
    );
    details_section(&mut html, details);
    reviews_section(&mut html, reviews);
    html.push_str("</div>\n</main>\n</body>\n</html>\n");
    html
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{title}<link rel=\"stylesheet\" href=\"static/tailwind/tailwind.css\">\n</head>\n<body>\n"
    )
}

fn details_section(html: &mut String, details: &Outcome) {
    html.push_str("<section class=\"card\">\n");
    if !details.status.is_success() {
        error(html, "Error fetching product details", &details.body);
        html.push_str("</section>\n");
        return;
    }
    html.push_str("<h4 class=\"heading\">Book Details</h4>\n<table class=\"table\">\n");
    for (label, key) in [
        ("Author", "author"),
        ("Year", "year"),
        ("Type", "type"),
        ("Pages", "pages"),
        ("Publisher", "publisher"),
        ("Language", "language"),
        ("ISBN-10", "ISBN-10"),
        ("ISBN-13", "ISBN-13"),
    ] {
        let value = match details.body.get(key) {
            Some(Value::String(s)) => escape(s),
            Some(Value::Null) | None => String::new(),
            Some(other) => escape(&other.to_string()),
        };
        let _ = writeln!(html, "<tr><th>{label}</th><td>{value}</td></tr>");
    }
    html.push_str("</table>\n</section>\n");
}

fn reviews_section(html: &mut String, reviews: &Outcome) {
    html.push_str("<section class=\"card\">\n");
    if !reviews.status.is_success() {
        error(html, "Error fetching product reviews", &reviews.body);
        html.push_str("</section>\n");
        return;
    }
    html.push_str("<h4 class=\"heading\">Book Reviews</h4>\n");
    let list = reviews.body.get("reviews").and_then(Value::as_array);
    for review in list.into_iter().flatten() {
        let _ = write!(
            html,
            "<blockquote class=\"review\">\n<p>&ldquo;{}&rdquo;</p>\n<footer>{}</footer>\n",
            escape(text(review, "text")),
            escape(text(review, "reviewer")),
        );
        if let Some(rating) = review.get("rating") {
            stars(html, rating);
        }
        html.push_str("</blockquote>\n");
    }
    let _ = write!(
        html,
        "<p class=\"served-by\">Reviews served by: {}",
        escape(text(&reviews.body, "podname"))
    );
    match reviews.body.get("clustername").and_then(Value::as_str) {
        Some(cluster) if cluster != "null" => {
            let _ = write!(html, " on cluster {}", escape(cluster));
        }
        _ => {}
    }
    html.push_str("</p>\n</section>\n");
}

/// Filled stars for the rating, then outlined ones up to five; a rating
/// error instead shows its message, and zero stars show nothing.
fn stars(html: &mut String, rating: &Value) {
    let count = rating.get("stars").and_then(Value::as_i64).unwrap_or(0);
    if count != 0 {
        let color = match text(rating, "color") {
            "" => "black",
            c => c,
        };
        let _ = writeln!(
            html,
            "<div class=\"flex gap-x-1 text-{}-500 mt-2\">",
            escape(color)
        );
        for i in 0..5 {
            if i < count {
                let _ = writeln!(
                    html,
                    "<svg id=\"glyphicon glyphicon-star\" class=\"star\" viewBox=\"0 0 24 24\" aria-hidden=\"true\"><path fill=\"currentColor\" d=\"{STAR}\"/></svg>"
                );
            } else {
                let _ = writeln!(
                    html,
                    "<svg id=\"glyphicon glyphicon-star-empty\" class=\"star\" viewBox=\"0 0 24 24\" aria-hidden=\"true\"><path fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" d=\"{STAR}\"/></svg>"
                );
            }
        }
        html.push_str("</div>\n");
    } else if let Some(error) = rating.get("error").and_then(Value::as_str) {
        let _ = writeln!(html, "<p class=\"text-red-500 mt-2\">{}</p>", escape(error));
    }
}

fn error(html: &mut String, heading: &str, body: &Value) {
    let _ = write!(
        html,
        "<h4 class=\"heading text-red-500\">{heading}</h4>\n<p>{}</p>\n",
        escape(text(body, "error"))
    );
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn ok(body: Value) -> Outcome {
        Outcome {
            status: StatusCode::OK,
            body,
        }
    }

    fn reviews(rating: Option<Value>) -> Outcome {
        let review = |name: &str| {
            let mut r = json!({"reviewer": name, "text": "good"});
            if let Some(rating) = &rating {
                r["rating"] = rating.clone();
            }
            r
        };
        ok(
            json!({"id": "0", "podname": "reviews-v2-abc", "clustername": "null",
                  "reviews": [review("Reviewer1"), review("Reviewer2")]}),
        )
    }

    fn render(user: Option<&str>, details: Outcome, reviews: Outcome) -> String {
        product(&super::super::product(), user, &details, &reviews)
    }

    #[test]
    fn stars_per_rating() {
        let html = render(
            None,
            ok(json!({})),
            reviews(Some(json!({"stars": 4, "color": "red"}))),
        );
        assert_eq!(html.matches("gap-x-1 text-red-500").count(), 2);
        assert_eq!(html.matches("id=\"glyphicon glyphicon-star\"").count(), 8);
        assert_eq!(
            html.matches("id=\"glyphicon glyphicon-star-empty\"")
                .count(),
            2
        );
        assert!(html.contains("Reviews served by: reviews-v2-abc</p>"));
        assert!(!html.contains("on cluster"));
        assert!(html.contains("Sign in") && !html.contains("Sign out"));
    }

    #[test]
    fn zero_stars_and_errors() {
        let zero = render(
            None,
            ok(json!({})),
            reviews(Some(json!({"stars": 0, "color": "black"}))),
        );
        assert!(!zero.contains("glyphicon") && !zero.contains("gap-x-1"));
        let unavailable = render(
            None,
            ok(json!({})),
            reviews(Some(
                json!({"error": "Ratings service is currently unavailable"}),
            )),
        );
        assert_eq!(
            unavailable
                .matches("Ratings service is currently unavailable")
                .count(),
            2
        );
        assert!(!unavailable.contains("glyphicon"));
    }

    #[test]
    fn error_sections_and_user() {
        let failed = |msg: &str| Outcome {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({"error": msg}),
        };
        let html = render(
            Some("<jason>"),
            failed("details gone"),
            failed("reviews gone"),
        );
        assert!(html.contains("Error fetching product details</h4>\n<p>details gone</p>"));
        assert!(html.contains("Error fetching product reviews</h4>\n<p>reviews gone</p>"));
        assert!(!html.contains("Book Reviews") && !html.contains("Book Details"));
        assert!(html.contains("&lt;jason&gt;") && html.contains("Sign out"));
    }
}
