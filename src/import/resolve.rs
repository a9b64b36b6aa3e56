//! Stage B: turn each listed camera into an RTSP URL with credentials (asking the camera over
//! ONVIF when the main gave no URL), and flag what cannot work from this box.

use std::time::Duration;

use futures::StreamExt as _;
use tracing::Instrument as _;

use super::http::{Http, HttpError};
use super::onvif::{OnvifClient, OnvifError};
use super::{check, Credentials, Imported, Known, Listed, Options};
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

fn bare_host(h: &str) -> &str {
    h.trim_start_matches('[').trim_end_matches(']')
}

/// The camera's entry already in the config: the same URL, else the same channel at the same
/// host (credentials set for another host are not the camera's).
fn known_entry<'a>(opts: &'a Options, l: &Listed) -> Option<&'a Known> {
    let bare = l.url.as_ref().map(|u| {
        let mut u = u.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u
    });
    let host = l.url.as_ref().and_then(|u| u.host_str()).or(l.host.as_deref()).map(bare_host);
    opts.known.iter().find(|k| bare.as_ref() == Some(&k.url)).or_else(|| {
        opts.known.iter().find(|k| k.channel == l.channel && host.is_none_or(|h| k.url.host_str().map(bare_host) == Some(h)))
    })
}

/// One user and password to try on a camera.
#[derive(Clone, PartialEq)]
struct Try {
    user: Option<String>,
    password: Secret,
}

/// The user to write when nothing better is known, and the credentials to try, in order: the
/// camera's entry in the config (set by hand), the source's, `--camera-password-env`, the
/// main's; each with its own user, else that default user.
fn candidates(opts: &Options, l: &Listed, known: Option<&Known>) -> (Option<String>, Vec<Try>) {
    let main = main_login(opts);
    let default_user = known.and_then(|k| k.username.clone()).or_else(|| l.username.clone()).or_else(|| opts.camera_user.clone()).or_else(|| main.map(|c| c.user.clone()));
    let mut v: Vec<Try> = Vec::new();
    let pairs = [
        (known.and_then(|k| k.username.clone()), known.and_then(|k| k.password.clone())),
        (l.username.clone(), l.password.clone()),
        (opts.camera_user.clone(), opts.camera_password.clone()),
        (main.map(|c| c.user.clone()), main.map(|c| c.password.clone())),
    ];
    for (user, password) in pairs {
        let Some(password) = password else { continue };
        let t = Try { user: user.or_else(|| default_user.clone()), password };
        if !v.contains(&t) {
            v.push(t);
        }
    }
    (default_user, v)
}

async fn resolve(opts: &Options, http: &Http, l: Listed) -> Imported {
    let known = known_entry(opts, &l);
    let (user, tries) = candidates(opts, &l, known);
    let first = tries.first();
    let mut cam = Imported {
        channel: l.channel,
        name: l.name.clone(),
        url: l.url.clone(),
        username: first.and_then(|t| t.user.clone()).or_else(|| user.clone()),
        password: first.map(|t| t.password.clone()),
        problems: Vec::new(),
        described: None,
    };
    if cam.url.is_none() {
        if let Some(dev) = &l.onvif {
            match stream_from_onvif(http, dev, &tries).await {
                Ok((url, worked, name)) => {
                    cam.url = Some(url);
                    if let Some(t) = worked {
                        cam.username = t.user;
                        cam.password = Some(t.password);
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
        let mut order: Vec<Option<Try>> = tries.iter().cloned().map(Some).collect();
        if let Some(p) = &cam.password {
            let current = Try { user: cam.username.clone(), password: p.clone() };
            order.retain(|t| t.as_ref() != Some(&current));
            order.insert(0, Some(current));
        }
        if order.is_empty() {
            order.push(None);
        }
        let mut last = String::new();
        let mut ok = false;
        let mut refused_entry = false;
        for t in order {
            let creds = t.as_ref().and_then(|t| Some(Credentials { user: t.user.clone()?, password: t.password.clone() }));
            match check::describe(cam.url.as_ref().unwrap_or(&url), creds.as_ref(), opts.timeout.max(Duration::from_secs(5))).await {
                Ok(d) => {
                    cam.described = Some(d);
                    if let Some(t) = t {
                        cam.username = t.user;
                        cam.password = Some(t.password);
                    }
                    ok = true;
                    break;
                }
                Err(check::DescribeError::Unauthorized) => {
                    refused_entry |= known.is_some_and(|k| k.password.is_some() && t.as_ref().is_some_and(|t| Some(&t.password) == k.password.as_ref()));
                    last = "DESCRIBE: no known password works (401)".to_owned();
                }
                Err(check::DescribeError::Other(e)) => {
                    last = format!("DESCRIBE failed: {e}");
                    break;
                }
            }
        }
        if !ok {
            cam.problems.push(last);
        } else if refused_entry {
            // The entry's own password stays (hand edits are kept): say that it is the wrong one.
            cam.problems.push("DESCRIBE refused the password in the config (401) but another known one works: remove the entry's password to take it".to_owned());
        }
    }
    cam
}

/// GetCapabilities → GetProfiles → GetStreamUri of the first profile, trying each user and
/// password. Returns the URL, the credentials that worked and a name for the camera.
async fn stream_from_onvif(http: &Http, dev: &url::Url, candidates: &[Try]) -> Result<(url::Url, Option<Try>, Option<String>), String> {
    let at = format!("{}:{}", dev.host_str().unwrap_or_default(), dev.port_or_known_default().unwrap_or(80));
    let mut tries: Vec<Option<(Try, Credentials)>> =
        candidates.iter().filter_map(|t| Some(Some((t.clone(), Credentials { user: t.user.clone()?, password: t.password.clone() })))).collect();
    if tries.is_empty() {
        tries.push(None);
    }
    let mut last = String::new();
    for t in &tries {
        let client = OnvifClient::new(http, dev.clone(), t.as_ref().map(|(_, c)| c));
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
                return Ok((url, t.as_ref().map(|(t, _)| t.clone()), name));
            }
            Err(OnvifError::Http(HttpError::Unauthorized)) => last = format!("ONVIF at {at}: no known password is accepted"),
            Err(OnvifError::Http(HttpError::Connect(e))) => return Err(format!("ONVIF at {at} is not reachable from this box: {e}")),
            Err(e) => return Err(format!("ONVIF at {at}: {e}")),
        }
    }
    Err(last)
}
