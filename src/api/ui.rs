//! `GET /`: the operator page (status, mains, channels, playback, events), one self-contained
//! HTML file embedded in the binary. It reads only the JSON API on the same origin.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, inline CSS and JS; no external resources.
pub const PAGE: &str = include_str!("ui/index.html");

/// What the page may load: itself, its inline style and script, and the API on the same
/// origin (fetch and `<video>`). Nothing else, and no framing by other sites.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; media-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}
