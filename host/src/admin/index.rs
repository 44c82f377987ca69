//! `GET /v1/index/NAME`: an index sink's merged stream, as NDJSON.
//!
//! * `since` — where to start: a cursor (the `Kinesthetic-Cursor` header of
//!   the previous answer, a number), an event id (`LISTENER-COUNTER` in hex,
//!   as objects and pushes print it: the lines after it), or an RFC 3339 time
//!   (the lines received at or after it). Default: the beginning.
//! * `limit` — lines at most (default 1000, at most 100000).
//! * `wait_ms` — long poll: when nothing is there yet, wait up to this long
//!   (at most 60000) for a line.
//! * `follow=true` — a streaming answer: the lines from `since` on, then
//!   every new line as it is merged, until the client goes away.
//!
//! Headers: `Kinesthetic-Cursor` (pass it as `since` next time),
//! `Kinesthetic-Count` (lines in this answer), `Kinesthetic-Index-Lines`
//! (lines in the index).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::AdminState;
use crate::sink::index::{Index, IndexLine, find, names};

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;
const MAX_WAIT_MS: u64 = 60_000;

fn bad(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Where `since` points: an ordinal.
fn resolve(index: &Index, since: Option<&str>) -> Result<u64, (StatusCode, String)> {
    let Some(s) = since.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let internal = |e: crate::sink::SinkError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    if let Ok(id) = s.parse::<crate::event::EventId>() {
        return match index.ordinal_after_id(id).map_err(internal)? {
            Some(o) => Ok(o),
            None => Err((
                StatusCode::NOT_FOUND,
                format!("event {s} is not in index {}", index.name()),
            )),
        };
    }
    if let Some(ms) = crate::timefmt::parse_rfc3339_ms(s) {
        return index.ordinal_at_time(ms).map_err(internal);
    }
    Err((
        StatusCode::BAD_REQUEST,
        format!(
            "since={s:?}: expected a cursor (a number), an event id (LISTENER-COUNTER in hex) or an RFC 3339 time"
        ),
    ))
}

fn body_of(lines: &[IndexLine]) -> Vec<u8> {
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.line.len() + 1).sum());
    for l in lines {
        body.extend_from_slice(&l.line);
        body.push(b'\n');
    }
    body
}

pub(super) async fn get_index(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(index) = find(&s.indexes, &name) else {
        return bad(
            StatusCode::NOT_FOUND,
            format!(
                "no index {name:?}; this process has {:?}",
                names(&s.indexes)
            ),
        );
    };
    for k in q.keys() {
        if !["since", "limit", "wait_ms", "follow"].contains(&k.as_str()) {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("unknown parameter {k:?}: since, limit, wait_ms or follow"),
            );
        }
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("limit: expected 1 to {MAX_LIMIT}"),
            );
        }
    };
    let wait = match q.get("wait_ms").map(|w| w.parse::<u64>()) {
        None => 0,
        Some(Ok(n)) if n <= MAX_WAIT_MS => n,
        Some(_) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("wait_ms: expected 0 to {MAX_WAIT_MS}"),
            );
        }
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("follow={other:?}: true or false"),
            );
        }
    };
    let from = match resolve(&index, q.get("since").map(String::as_str)) {
        Ok(o) => o,
        Err((code, message)) => return bad(code, message),
    };
    if follow {
        return follow_from(index, from);
    }
    if wait > 0 && index.count() <= from {
        let cancel = CancellationToken::new();
        let _ = tokio::time::timeout(
            Duration::from_millis(wait),
            index.wait_beyond(from, &cancel),
        )
        .await;
    }
    let lines = match index.read(from, limit) {
        Ok(l) => l,
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let next = lines.last().map_or(from, |l| l.ordinal + 1);
    let mut r = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body_of(&lines),
    )
        .into_response();
    let h = r.headers_mut();
    for (k, v) in [
        ("kinesthetic-cursor", next.to_string()),
        ("kinesthetic-count", lines.len().to_string()),
        ("kinesthetic-index-lines", index.count().to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}

/// A streaming answer: every line from `from` on, as it is merged.
fn follow_from(index: Arc<Index>, from: u64) -> Response {
    let cancel = CancellationToken::new();
    let stream = futures::stream::unfold((index, from, cancel), |(index, at, cancel)| async move {
        loop {
            match index.read(at, 10_000) {
                Ok(lines) if !lines.is_empty() => {
                    let next = lines.last().map_or(at, |l| l.ordinal + 1);
                    let chunk = bytes::Bytes::from(body_of(&lines));
                    return Some((Ok::<_, std::io::Error>(chunk), (index, next, cancel)));
                }
                Ok(_) => index.wait_beyond(at, &cancel).await,
                Err(e) => {
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (index, at, cancel),
                    ));
                }
            }
        }
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut()
        .insert("kinesthetic-cursor", HeaderValue::from(from));
    r
}
