//! The admin API (its own listener, so it answers while the intake is
//! saturated): `/metrics` (Prometheus), `/healthz`, `/readyz`,
//! `/v1/status`, `/v1/filters` and `/v1/index/NAME` ([`index`]).

mod index;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::consumer::status::StatusBoard;

/// What the admin API reads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub metrics: Arc<Registry>,
    /// The consumer's pipelines, when this process consumes.
    pub status: Option<StatusBoard>,
    /// The filters directory, when this process consumes.
    pub filters: Option<Arc<crate::filter::Registry>>,
    /// What else this process runs, for `/v1/status` (`intake` → its address…).
    pub roles: Arc<serde_json::Value>,
    /// Set once every role has started (streams opened, listeners bound).
    pub started: Arc<AtomicBool>,
    pub since: Instant,
    /// The index sinks, for `GET /v1/index/NAME`.
    pub indexes: crate::sink::index::Indexes,
}

impl AdminState {
    pub fn new(metrics: Arc<Registry>) -> Self {
        Self {
            metrics,
            status: None,
            filters: None,
            roles: Arc::new(json!({})),
            started: Arc::new(AtomicBool::new(false)),
            since: Instant::now(),
            indexes: Default::default(),
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/v1/status", get(status))
        .route("/v1/filters", get(filters))
        .route("/v1/index/{name}", get(index::get_index))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({
                    "error": "no such endpoint: try /metrics, /healthz, /readyz, /v1/status, /v1/filters, /v1/index/NAME"
                })),
            )
        })
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn metrics(axum::extract::State(s): axum::extract::State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Ready once every role has started and every pipeline has loaded its
/// stream's shards and its checkpoints.
async fn ready(axum::extract::State(s): axum::extract::State<AdminState>) -> Response {
    let mut waiting: Vec<String> = Vec::new();
    if !s.started.load(Ordering::Acquire) {
        waiting.push("start-up".to_owned());
    }
    if let Some(st) = &s.status {
        waiting.extend(st.not_loaded().into_iter().map(|p| format!("pipeline {p}")));
    }
    if waiting.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "waiting_for": waiting})),
        )
            .into_response()
    }
}

fn filter_list(s: &AdminState) -> serde_json::Value {
    let Some(r) = &s.filters else {
        return json!([]);
    };
    let set = r.current();
    serde_json::Value::Array(
        set.filters
            .values()
            .map(|f| {
                let i = f.info();
                json!({
                    "name": i.name,
                    "sha256": i.sha256,
                    "size": i.size,
                    "imports": i.imports,
                })
            })
            .collect(),
    )
}

async fn status(axum::extract::State(s): axum::extract::State<AdminState>) -> Response {
    let pipelines = s
        .status
        .as_ref()
        .map(|st| serde_json::to_value(st.snapshot()).unwrap_or(json!({})))
        .unwrap_or(json!({}));
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.since.elapsed().as_secs(),
        "roles": *s.roles,
        "pipelines": pipelines,
        "filters": filter_list(&s),
        "filters_dir": s.filters.as_ref().map(|r| r.dir().display().to_string()),
        "indexes": index_status(&s),
    }))
    .into_response()
}

fn index_status(s: &AdminState) -> serde_json::Value {
    let list: Vec<_> = s
        .indexes
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    serde_json::Value::Object(
        list.iter()
            .map(|i| (i.name().to_owned(), i.status()))
            .collect(),
    )
}

async fn filters(axum::extract::State(s): axum::extract::State<AdminState>) -> Response {
    let generation = s.filters.as_ref().map_or(0, |r| r.current().generation);
    Json(json!({
        "dir": s.filters.as_ref().map(|r| r.dir().display().to_string()),
        "generation": generation,
        "filters": filter_list(&s),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// One request through the router, no socket: status and JSON body.
    async fn get(state: &AdminState, path: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::get(path).body(Body::empty());
        let Ok(req) = req else {
            return (StatusCode::IM_A_TEAPOT, json!(null));
        };
        let Ok(resp) = router(state.clone()).oneshot(req).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    #[tokio::test]
    async fn the_routes_answer_and_a_wrong_path_says_where_to_go() {
        let s = AdminState::new(Arc::new(Registry::default()));
        assert_eq!(get(&s, "/healthz").await, (StatusCode::OK, json!("ok")));
        // Ready only once started.
        let (code, v) = get(&s, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["waiting_for"], json!(["start-up"]));
        s.started.store(true, Ordering::Release);
        assert_eq!(get(&s, "/readyz").await.0, StatusCode::OK);
        let (code, v) = get(&s, "/v1/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["version"], json!(env!("CARGO_PKG_VERSION")));
        let (code, v) = get(&s, "/v1/index/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
        let (code, v) = get(&s, "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("/v1/status")),
            "{v}"
        );
    }
}
