//! Device simulators for the import tests, each written from a public format and serving
//! camsim URLs: an ONVIF camera (the third-party `onvif-server` crate), a Hikvision NVR (ISAPI)
//! and a Dahua NVR (HTTP API). The NVRs demand HTTP Digest, checked by camsim's authenticator.
#![allow(dead_code)]

pub mod dahua;
pub mod hikvision;
pub mod onvif;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use understudy::camsim::{AuthConfig, AuthScheme, Authenticator};

/// An HTTP device answering one resource with a body the test can change, behind Digest.
pub struct HttpDevice {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpDevice {
    /// Serves `path` on `ip` (port 0) with `body`, Digest user `admin` / `password`.
    pub async fn start(ip: &str, path: &'static str, content_type: &'static str, password: &str, body: String) -> HttpDevice {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body));
        let auth = Arc::new(Authenticator::new(Some(AuthConfig { username: "admin".into(), password: password.into(), scheme: AuthScheme::Digest })));
        let (b, a) = (body.clone(), auth.clone());
        let app = axum::Router::new().route(
            path,
            axum::routing::get(move |headers: HeaderMap| {
                let (b, a) = (b.clone(), a.clone());
                async move {
                    let authz = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if !a.check("GET", authz) {
                        return Response::builder()
                            .status(StatusCode::UNAUTHORIZED)
                            .header("WWW-Authenticate", a.challenge())
                            .body(axum::body::Body::from("Unauthorized"))
                            .unwrap();
                    }
                    let text = b.lock().unwrap().clone();
                    ([("content-type", content_type)], text).into_response()
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpDevice { addr, body, task }
    }

    pub fn set_body(&self, s: String) {
        *self.body.lock().unwrap() = s;
    }
}
