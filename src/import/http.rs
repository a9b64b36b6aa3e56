//! HTTP requests to recorders and cameras with their credentials: Digest (RFC 7616/2617, via
//! `digest_auth`) when challenged, Basic only if that is all the server offers. Answers are
//! size-limited so a hostile or broken device cannot exhaust memory.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::Credentials;

/// Largest answer body accepted (a 10,000-channel list is a few MB).
const MAX_BODY: usize = 32 << 20;

/// What went wrong talking HTTP; the caller names the source.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("wrong user or password (HTTP 401)")]
    Unauthorized,
    #[error("HTTP {0}")]
    Status(StatusCode),
    #[error("answer larger than {} MiB", MAX_BODY >> 20)]
    TooLarge,
    #[error("{0}")]
    Other(String),
}

pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new(timeout: Duration) -> Result<Http, HttpError> {
        Http::from_builder(reqwest::Client::builder(), timeout)
    }

    /// A client from `builder` (e.g. with its own TLS trust), with the usual timeouts and no redirects.
    pub fn from_builder(builder: reqwest::ClientBuilder, timeout: Duration) -> Result<Http, HttpError> {
        let client = builder
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HttpError::Other(format!("cannot build HTTP client: {e}")))?;
        Ok(Http { client })
    }

    /// The underlying client, for requests with other authentication (bearer tokens, cookies).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, url: &url::Url, creds: Option<&Credentials>) -> Result<String, HttpError> {
        self.request(Method::GET, url, None, creds).await
    }

    /// POST `body` (`content_type`), answering a Digest challenge with `creds`.
    pub async fn post(&self, url: &url::Url, content_type: &str, body: &str, creds: Option<&Credentials>) -> Result<String, HttpError> {
        self.request(Method::POST, url, Some((content_type, body)), creds).await
    }

    async fn request(&self, method: Method, url: &url::Url, body: Option<(&str, &str)>, creds: Option<&Credentials>) -> Result<String, HttpError> {
        let build = |auth: Option<String>| {
            let mut rb = self.client.request(method.clone(), url.clone());
            if let Some((ct, b)) = body {
                rb = rb.header(CONTENT_TYPE, ct).body(b.to_owned());
            }
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            rb
        };
        let resp = build(None).send().await.map_err(connect_error)?;
        let resp = if resp.status() == StatusCode::UNAUTHORIZED {
            let Some(creds) = creds else { return Err(HttpError::Unauthorized) };
            let challenges: Vec<String> = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            let auth = authorization(&challenges, creds, &method, url, body.map(|b| b.1))?;
            build(Some(auth)).send().await.map_err(connect_error)?
        } else {
            resp
        };
        match resp.status() {
            StatusCode::UNAUTHORIZED => return Err(HttpError::Unauthorized),
            s if !s.is_success() && s != StatusCode::INTERNAL_SERVER_ERROR && s != StatusCode::BAD_REQUEST => return Err(HttpError::Status(s)),
            _ => {}
        }
        // SOAP faults come as 400/500 with a body the caller reads; other errors stop here.
        let status = resp.status();
        let text = read_body(resp).await?;
        if !status.is_success() && !text.contains("Fault") {
            return Err(HttpError::Status(status));
        }
        Ok(text)
    }
}

/// The body of an answer as text, at most [`MAX_BODY`] bytes.
pub async fn read_body(mut resp: reqwest::Response) -> Result<String, HttpError> {
    if resp.content_length().is_some_and(|n| n as usize > MAX_BODY) {
        return Err(HttpError::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError::Other(format!("reading the answer: {e}")))? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| HttpError::Other("answer is not UTF-8".to_owned()))
}

fn connect_error(e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Connect("timed out".to_owned())
    } else if e.is_connect() {
        // The innermost cause says what happened ("Connection refused").
        let mut cause: &dyn std::error::Error = &e;
        while let Some(s) = cause.source() {
            cause = s;
        }
        HttpError::Connect(cause.to_string())
    } else {
        HttpError::Other(e.without_url().to_string())
    }
}

/// The `Authorization` value answering the server's challenges: Digest preferred, else Basic.
fn authorization(challenges: &[String], creds: &Credentials, method: &Method, url: &url::Url, body: Option<&str>) -> Result<String, HttpError> {
    let uri = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    if let Some(c) = challenges.iter().find(|c| c.trim_start().to_ascii_lowercase().starts_with("digest")) {
        let mut prompt = digest_auth::parse(c).map_err(|e| HttpError::Other(format!("bad Digest challenge: {e}")))?;
        let m = match *method {
            Method::POST => digest_auth::HttpMethod::POST,
            _ => digest_auth::HttpMethod::GET,
        };
        let ctx = digest_auth::AuthContext::new_with_method(creds.user.as_str(), creds.password.expose(), uri.as_str(), body.map(str::as_bytes), m);
        let answer = prompt.respond(&ctx).map_err(|e| HttpError::Other(format!("cannot answer the Digest challenge: {e}")))?;
        return Ok(answer.to_header_string());
    }
    if challenges.iter().any(|c| c.trim_start().to_ascii_lowercase().starts_with("basic")) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.user, creds.password.expose()));
        return Ok(format!("Basic {token}"));
    }
    Err(HttpError::Unauthorized)
}
