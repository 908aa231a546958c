//! details: book details by product id. v1 answers from memory; v2 asks an
//! external book API (plain HTTP when `DO_NOT_ENCRYPT=true`, leaving TLS
//! origination to the mesh's egress configuration).

use std::time::Duration;

use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Client, Env, Error, propagate,
    server::{self, App, Request, Response},
};

const ISBN: &str = "0486424618";
const BOOK_API_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Details {
    source: Source,
}

enum Source {
    Memory,
    External { client: Client, url: String },
}

/// Field order is part of the wire format.
#[derive(Debug, PartialEq, Serialize)]
pub struct Book {
    pub id: i64,
    pub author: String,
    pub year: Value,
    #[serde(rename = "type")]
    pub kind: String,
    pub pages: Value,
    pub publisher: String,
    pub language: String,
    #[serde(rename = "ISBN-10")]
    pub isbn10: String,
    #[serde(rename = "ISBN-13")]
    pub isbn13: String,
}

// === impl Details ===

impl Details {
    pub fn from_env(version: &str, env: &Env) -> Result<Self, Error> {
        let external_default = match version {
            "v1" => "false",
            "v2" => "true",
            _ => {
                return Err(Error::UnknownVersion {
                    service: "details",
                    version: version.to_owned(),
                    known: "v1, v2",
                });
            }
        };
        if env.get_or("ENABLE_EXTERNAL_BOOK_SERVICE", external_default) != "true" {
            return Ok(Self {
                source: Source::Memory,
            });
        }
        let scheme = if env.get("DO_NOT_ENCRYPT") == Some("true") {
            "http"
        } else {
            "https"
        };
        Ok(Self {
            source: Source::External {
                client: Client::from_env(env)?,
                url: format!("{scheme}://www.googleapis.com/books/v1/volumes?q=isbn:{ISBN}"),
            },
        })
    }

    async fn book(&self, id: i64, req: &Request) -> Result<Book, String> {
        match &self.source {
            Source::Memory => Ok(Book {
                id,
                author: "William Shakespeare".into(),
                year: json!(1595),
                kind: "paperback".into(),
                pages: json!(200),
                publisher: "PublisherA".into(),
                language: "English".into(),
                isbn10: "1234567890".into(),
                isbn13: "123-1234567890".into(),
            }),
            Source::External { client, url } => {
                let reply = client
                    .get(url, propagate::forwarded(req.headers()), BOOK_API_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                if reply.status != StatusCode::OK {
                    return Err(format!("book service answered {}", reply.status));
                }
                let volumes: Value =
                    serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
                book_from_volumes(id, &volumes)
            }
        }
    }
}

impl App for Details {
    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path();
        if path == "/health" {
            return server::json(StatusCode::OK, &json!({"status": "Details is healthy"}));
        }
        if req.method() != Method::GET || !(path == "/details" || path.starts_with("/details/")) {
            return server::not_found();
        }
        let last = path.rsplit('/').next().unwrap_or_default();
        let Some(id) = server::parse_id(last) else {
            return server::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "please provide numeric product id"}),
            );
        };
        match self.book(id, &req).await {
            Ok(book) => server::json(StatusCode::OK, &book),
            Err(error) => server::json(StatusCode::BAD_REQUEST, &json!({ "error": error })),
        }
    }
}

/// Maps the first volume of a Books API answer into details' shape.
fn book_from_volumes(id: i64, volumes: &Value) -> Result<Book, String> {
    let info = volumes
        .pointer("/items/0/volumeInfo")
        .ok_or("the book service returned no volume")?;
    let text = |key: &str| info.get(key).and_then(Value::as_str).unwrap_or_default();
    let isbn = |kind: &str| {
        info.get("industryIdentifiers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|i| i.get("identifier").and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned()
    };
    Ok(Book {
        id,
        author: info
            .pointer("/authors/0")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        year: json!(text("publishedDate")),
        kind: if text("printType") == "BOOK" {
            "paperback"
        } else {
            "unknown"
        }
        .to_owned(),
        pages: info.get("pageCount").cloned().unwrap_or(Value::Null),
        publisher: text("publisher").to_owned(),
        language: if text("language") == "en" {
            "English"
        } else {
            "unknown"
        }
        .to_owned(),
        isbn10: isbn("ISBN_10"),
        isbn13: isbn("ISBN_13"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_body_is_byte_exact() {
        let body = serde_json::to_string(&Book {
            id: 0,
            author: "William Shakespeare".into(),
            year: json!(1595),
            kind: "paperback".into(),
            pages: json!(200),
            publisher: "PublisherA".into(),
            language: "English".into(),
            isbn10: "1234567890".into(),
            isbn13: "123-1234567890".into(),
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}"#
        );
    }

    #[test]
    fn maps_books_api_volume() {
        let volumes = json!({"items": [{"volumeInfo": {
            "authors": ["William Shakespeare", "Someone Else"],
            "publishedDate": "2002-05-17",
            "printType": "BOOK",
            "pageCount": 80,
            "publisher": "Dover",
            "language": "en",
            "industryIdentifiers": [
                {"type": "ISBN_13", "identifier": "9780486424613"},
                {"type": "ISBN_10", "identifier": "0486424618"}
            ]
        }}]});
        let book = book_from_volumes(3, &volumes).unwrap();
        assert_eq!(book.author, "William Shakespeare");
        assert_eq!(book.year, json!("2002-05-17"));
        assert_eq!(book.kind, "paperback");
        assert_eq!(book.pages, json!(80));
        assert_eq!(book.language, "English");
        assert_eq!(book.isbn10, "0486424618");
        assert_eq!(book.isbn13, "9780486424613");
        assert!(book_from_volumes(0, &json!({"totalItems": 0})).is_err());
    }

    #[test]
    fn versions() {
        let env = Env::default();
        assert!(matches!(
            Details::from_env("v1", &env).unwrap().source,
            Source::Memory
        ));
        assert!(matches!(
            Details::from_env("v2", &env).unwrap().source,
            Source::External { .. }
        ));
        assert!(Details::from_env("v9", &env).is_err());
    }
}
