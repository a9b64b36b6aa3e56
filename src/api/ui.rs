//! `GET /`: the operator page (status, mains, channels, playback, events), one self-contained
//! HTML file embedded in the binary. It reads only the JSON API on the same origin.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, inline CSS and JS; no external resources.
pub const PAGE: &str = include_str!("ui/index.html");

/// hls.js 1.7.4 (Apache-2.0, `dist/hls.light.min.js` from the npm package, licence beside it),
/// for HLS in browsers without native HLS; pinned by SHA-256 in a test.
pub const HLS_JS: &[u8] = include_bytes!("ui/vendor/hls.light.min.js");

/// What the page may load: itself, its inline style and script, scripts and the API on the
/// same origin (fetch, `<video>`, Media Source blobs). Nothing else, and no framing by others.
const CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; \
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

/// `GET /vendor/hls.light.min.js`: the vendored hls.js (immutable for a given binary).
pub async fn hls_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        HLS_JS,
    )
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The vendored file is exactly the npm release's (`npm pack hls.js@1.7.4`,
    /// package/dist/hls.light.min.js).
    #[test]
    fn hls_js_is_the_pinned_release() {
        let hex: String = Sha256::digest(super::HLS_JS).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "482cccb3a224554f64d8c2cf0d335dba4a3819bdb726afbfddfe15de4c277d82", "hls.js 1.7.4");
    }
}
