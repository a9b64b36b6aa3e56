//! Stage B: turn each listed camera into an RTSP URL with credentials (asking the camera over
//! ONVIF when the main gave no URL), and flag what cannot work from this box.

use std::time::Duration;

use futures::StreamExt as _;
use tracing::Instrument as _;

use super::http::{Http, HttpError};
use super::onvif::{OnvifClient, OnvifError};
use super::{check, Credentials, Imported, Listed, Options};
use crate::config::Secret;

/// Cameras resolved at once (each is one ONVIF exchange and at most one DESCRIBE per password).
const CONCURRENCY: usize = 16;

pub async fn resolve_all(opts: &Options, http: &Http, listed: Vec<Listed>) -> Vec<Imported> {
    futures::stream::iter(listed.into_iter().map(|l| {
        let span = tracing::info_span!("import", main = %opts.main, channel = l.channel, camera = %l.host.as_deref().unwrap_or("?"));
        resolve(opts, http, l).instrument(span)
    }))
    .buffer_unordered(CONCURRENCY)
    .collect()
    .await
}

/// The main's login, when it may also be a camera's (see [`super::Source::login_may_fit_cameras`]).
fn main_login(opts: &Options) -> Option<&super::Credentials> {
    opts.main_creds.as_ref().filter(|_| opts.source.login_may_fit_cameras())
}

/// Passwords to try, in order: the source's, `--camera-password-env`, the main's.
fn candidates(opts: &Options, l: &Listed) -> Vec<Secret> {
    let mut v: Vec<Secret> = Vec::new();
    for p in [l.password.clone(), opts.camera_password.clone(), main_login(opts).map(|c| c.password.clone())].into_iter().flatten() {
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

async fn resolve(opts: &Options, http: &Http, l: Listed) -> Imported {
    let user = l.username.clone().or_else(|| opts.camera_user.clone()).or_else(|| main_login(opts).map(|c| c.user.clone()));
    let passwords = candidates(opts, &l);
    let mut cam = Imported { channel: l.channel, name: l.name.clone(), url: l.url.clone(), username: user.clone(), password: passwords.first().cloned(), problems: Vec::new(), described: None };
    if cam.url.is_none() {
        if let Some(dev) = &l.onvif {
            match stream_from_onvif(http, dev, user.as_deref(), &passwords).await {
                Ok((url, pw, name)) => {
                    cam.url = Some(url);
                    if pw.is_some() {
                        cam.password = pw;
                    }
                    if cam.name.is_none() {
                        cam.name = name;
                    }
                }
                Err(e) => cam.problems.push(e),
            }
        } else {
            cam.problems.push("the main gives no stream URL and no ONVIF address for this camera".to_owned());
        }
    }
    let Some(url) = cam.url.clone() else { return cam };
    // Credentials inside a URL move out of it, as the config does.
    if let Some(mut u) = cam.url.take() {
        if !u.username().is_empty() {
            cam.username = Some(u.username().to_owned());
        }
        if let Some(p) = u.password() {
            cam.password = Some(Secret::new(p));
        }
        let _ = u.set_username("");
        let _ = u.set_password(None);
        cam.url = Some(u);
    }
    if let Some((mh, _)) = opts.source.main_address().filter(|_| opts.source.may_restream()) {
        if url.host_str() == Some(mh.as_str()) {
            cam.problems.push(format!("the URL is served by the main itself ({mh}): useless once the main fails"));
        }
    }
    if cam.password.is_none() {
        cam.problems.push("no password known: the source gives none; pass --camera-password-env or set it in the config".to_owned());
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port().unwrap_or(554);
    let reachable = matches!(
        tokio::time::timeout(opts.timeout, tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))).await,
        Ok(Ok(_))
    );
    if !reachable {
        cam.problems.push(format!("address {host}:{port} is not reachable from this box (a camera on the main's own network?)"));
        return cam;
    }
    if opts.check {
        let mut tries: Vec<Option<Secret>> = passwords.iter().cloned().map(Some).collect();
        if let Some(p) = &cam.password {
            tries.retain(|t| t.as_ref() != Some(p));
            tries.insert(0, Some(p.clone()));
        }
        if tries.is_empty() {
            tries.push(None);
        }
        let mut last = String::new();
        let mut ok = false;
        for pw in tries {
            let creds = match (&cam.username, &pw) {
                (Some(u), Some(p)) => Some(Credentials { user: u.clone(), password: p.clone() }),
                _ => None,
            };
            match check::describe(cam.url.as_ref().unwrap_or(&url), creds.as_ref(), opts.timeout.max(Duration::from_secs(5))).await {
                Ok(d) => {
                    cam.described = Some(d);
                    if pw.is_some() {
                        cam.password = pw;
                    }
                    ok = true;
                    break;
                }
                Err(check::DescribeError::Unauthorized) => last = "DESCRIBE: no known password works (401)".to_owned(),
                Err(check::DescribeError::Other(e)) => {
                    last = format!("DESCRIBE failed: {e}");
                    break;
                }
            }
        }
        if !ok {
            cam.problems.push(last);
        }
    }
    cam
}

/// GetCapabilities → GetProfiles → GetStreamUri of the first profile, trying each password.
/// Returns the URL, the password that worked and a name for the camera.
async fn stream_from_onvif(http: &Http, dev: &url::Url, user: Option<&str>, passwords: &[Secret]) -> Result<(url::Url, Option<Secret>, Option<String>), String> {
    let at = format!("{}:{}", dev.host_str().unwrap_or_default(), dev.port_or_known_default().unwrap_or(80));
    let mut tries: Vec<Option<Credentials>> = match user {
        Some(u) => passwords.iter().map(|p| Some(Credentials { user: u.to_owned(), password: p.clone() })).collect(),
        None => Vec::new(),
    };
    if tries.is_empty() {
        tries.push(None);
    }
    let mut last = String::new();
    for creds in &tries {
        let client = OnvifClient::new(http, dev.clone(), creds.as_ref());
        let result = async {
            let media = client.media_url().await?;
            let profiles = client.profiles(&media).await?;
            let first = profiles.first().ok_or_else(|| OnvifError::Malformed("the device has no media profile".to_owned()))?;
            let url = client.stream_uri(&media, &first.token).await?;
            let name = client.device_information().await.ok().map(|i| format!("{} {}", i.manufacturer, i.model).trim().to_owned()).filter(|s| !s.is_empty());
            Ok::<_, OnvifError>((url, name))
        }
        .await;
        match result {
            Ok((url, name)) => {
                tracing::info!(onvif = %at, "stream URL found over ONVIF");
                return Ok((url, creds.as_ref().map(|c| c.password.clone()), name));
            }
            Err(OnvifError::Http(HttpError::Unauthorized)) => last = format!("ONVIF at {at}: no known password is accepted"),
            Err(OnvifError::Http(HttpError::Connect(e))) => return Err(format!("ONVIF at {at} is not reachable from this box: {e}")),
            Err(e) => return Err(format!("ONVIF at {at}: {e}")),
        }
    }
    Err(last)
}
