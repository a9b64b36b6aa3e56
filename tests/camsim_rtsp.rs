//! camsim's RTSP server against raw TCP clients: status codes, CSeq echo, keepalives, session
//! timeout, and broken clients that must not disturb others.

mod camsim_util;

use std::time::{Duration, Instant};

use camsim_util::{fixture, frame, play};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use understudy::camsim::{find_camsim_tags, CamSim, CamSimConfig, Pacing};

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    /// Bytes of interleaved frames skipped so far.
    media: usize,
}

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Client {
    async fn connect(sim: &CamSim) -> Client {
        Client {
            s: TcpStream::connect(sim.local_addr()).await.unwrap(),
            buf: Vec::new(),
            media: 0,
        }
    }

    async fn fill(&mut self) -> bool {
        let mut tmp = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(20), self.s.read(&mut tmp))
            .await
            .expect("server answers within 20 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n > 0
    }

    /// Reads the next response, skipping interleaved frames.
    async fn response(&mut self) -> Resp {
        loop {
            if self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                let len = 4 + usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() >= len {
                    self.buf.drain(..len);
                    self.media += len;
                    continue;
                }
            } else if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                let mut r = Resp {
                    status: head[9..12].parse().unwrap(),
                    head,
                    body: String::new(),
                };
                let len: usize = r.header("Content-Length").map_or(0, |v| v.parse().unwrap());
                if self.buf.len() >= end + 4 + len {
                    r.body = String::from_utf8(self.buf[end + 4..end + 4 + len].to_vec()).unwrap();
                    self.buf.drain(..end + 4 + len);
                    return r;
                }
            }
            assert!(
                self.fill().await,
                "connection closed while awaiting a response"
            );
        }
    }

    async fn request(&mut self, req: &str) -> Resp {
        self.s.write_all(req.as_bytes()).await.unwrap();
        self.response().await
    }

    /// Reads until the server closes; returns how long that took.
    async fn await_close(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        let mut tmp = vec![0u8; 65536];
        loop {
            match tokio::time::timeout_at((start + within).into(), self.s.read(&mut tmp)).await {
                Err(_) => panic!("connection still open after {within:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
            }
        }
    }
}

async fn sim_with_timeout(timeout: Duration) -> CamSim {
    let mut cfg = CamSimConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        2,
        fixture("h264-360p25-small.mp4"),
    );
    cfg.session_timeout = timeout;
    CamSim::start(cfg).await.unwrap()
}

#[tokio::test]
async fn status_codes_and_cseq() {
    let sim = sim_with_timeout(Duration::from_secs(60)).await;
    let url = sim.url(1);
    let mut c = Client::connect(&sim).await;

    let r = c.request("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").await;
    assert_eq!((r.status, r.header("CSeq")), (200, Some("1")));
    assert!(r.header("Public").unwrap().contains("GET_PARAMETER"));
    let r = c
        .request(&format!("FROB {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n"))
        .await;
    assert_eq!((r.status, r.header("CSeq")), (501, Some("2")));
    let r = c
        .request(&format!("PAUSE {url} RTSP/1.0\r\nCSeq: 3\r\n\r\n"))
        .await;
    assert_eq!((r.status, r.header("CSeq")), (405, Some("3")));
    assert!(r.header("Allow").is_some());
    let r = c
        .request(&format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: 4\r\n\r\n",
            sim.url(9)
        ))
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .request(&format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 5\r\n\r\n"))
        .await;
    assert_eq!((r.status, r.header("CSeq")), (200, Some("5")));
    assert_eq!(r.header("Content-Base"), Some(format!("{url}/").as_str()));
    assert!(r.body.contains("m=video 0 RTP/AVP 96") && r.body.contains("sprop-parameter-sets="));
    let r = c.request(&format!("DESCRIBE {url} RTSP/1.0\r\n\r\n")).await;
    assert_eq!(r.status, 400, "no CSeq");
    let r = c
        .request(&format!(
            "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 6\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 461, "UDP is not offered");
    let r = c
        .request(&format!("PLAY {url} RTSP/1.0\r\nCSeq: 7\r\n\r\n"))
        .await;
    assert_eq!(r.status, 455, "PLAY before SETUP");
    let r = c
        .request(&format!("GET_PARAMETER {url} RTSP/1.0\r\nCSeq: 8\r\n\r\n"))
        .await;
    assert_eq!(r.status, 200);

    let r = c
        .request(&format!(
            "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 9\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 200);
    let transport = r.header("Transport").unwrap();
    assert!(
        transport.starts_with("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc="),
        "{transport}"
    );
    let session = r.header("Session").unwrap().to_string();
    assert!(session.ends_with(";timeout=60"), "{session}");
    let id = session.split(';').next().unwrap();
    let r = c
        .request(&format!(
            "PLAY {url} RTSP/1.0\r\nCSeq: 10\r\nSession: nope\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 454, "wrong session");
    let r = c
        .request(&format!(
            "PLAY {url} RTSP/1.0\r\nCSeq: 11\r\nSession: {id}\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 200);
    let rtp_info = r.header("RTP-Info").unwrap();
    assert!(
        rtp_info.starts_with(&format!("url={url}/trackID=0;seq=")),
        "{rtp_info}"
    );
    assert!(rtp_info.contains(";rtptime="), "{rtp_info}");
    // Media on channel 2, with the camera tag, interleaved with keepalive answers.
    let r = c.request(&format!("SET_PARAMETER {url} RTSP/1.0\r\nCSeq: 12\r\nSession: {id}\r\nContent-Length: 4\r\n\r\nx: y")).await;
    assert_eq!((r.status, r.header("CSeq")), (200, Some("12")));
    while c.buf.len() < 4 {
        c.fill().await;
    }
    assert_eq!(&c.buf[..2], b"$\x02");
    let r = c
        .request(&format!(
            "TEARDOWN {url} RTSP/1.0\r\nCSeq: 13\r\nSession: {id}\r\n\r\n"
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(c.media > 0);

    // Bytes that are not RTSP: 400, then the server closes.
    c.s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    let r = c.response().await;
    assert_eq!(r.status, 400);
    c.await_close(Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn session_timeout_closes_silent_clients_only() {
    let sim = sim_with_timeout(Duration::from_secs(2)).await;
    let url = sim.url(1);
    let mut c = Client::connect(&sim).await;
    let r = c
        .request(&format!(
            "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        ))
        .await;
    assert_eq!(
        r.header("Session").unwrap().split_once(';').unwrap().1,
        "timeout=2"
    );
    let id = r
        .header("Session")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        c.request(&format!(
            "PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\n"
        ))
        .await
        .status,
        200
    );
    // Keepalives every 0.5 s hold the session for 4 s (twice the timeout).
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = c
            .request(&format!(
                "GET_PARAMETER {url} RTSP/1.0\r\nCSeq: {}\r\nSession: {id}\r\n\r\n",
                3 + i
            ))
            .await;
        assert_eq!(r.status, 200);
    }
    let media = c.media;
    assert!(media > 50_000, "media kept flowing: {media} bytes");
    // Silence: the server closes after about the timeout.
    let took = c.await_close(Duration::from_secs(20)).await;
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    assert_eq!(sim.stats().total.active_sessions, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn broken_clients_do_not_disturb_others() {
    let sim = sim_with_timeout(Duration::from_secs(60)).await;
    let url = sim.url(1);
    let mut good = play(&url, None).await.unwrap();
    frame(&mut good).await;

    // A client that plays but never reads (its socket buffers fill up).
    let mut stuck = Client::connect(&sim).await;
    let r = stuck
        .request(&format!(
            "SETUP {url} RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
        ))
        .await;
    let id = r
        .header("Session")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    stuck
        .s
        .write_all(format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Garbage, a half request, an oversized header, and a client vanishing mid-SETUP.
    let mut garbage = Client::connect(&sim).await;
    garbage.s.write_all(&[0xffu8; 3000]).await.unwrap();
    let mut half = Client::connect(&sim).await;
    half.s
        .write_all(b"DESCRIBE rtsp://x/cam/1 RTSP/1.0\r\nCSe")
        .await
        .unwrap();
    let mut huge = Client::connect(&sim).await;
    let _ = huge
        .s
        .write_all(format!("OPTIONS * RTSP/1.0\r\nX: {}\r\n", "a".repeat(70_000)).as_bytes())
        .await;
    let mut vanish = Client::connect(&sim).await;
    vanish
        .s
        .write_all(
            format!("SETUP {url} RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    drop(vanish);

    assert_eq!(garbage.response().await.status, 400);
    assert_eq!(huge.response().await.status, 400);
    // The good session goes on: 50 more frames, no loss, consecutive tags.
    let mut last = None;
    for _ in 0..50 {
        let f = frame(&mut good).await;
        assert_eq!(f.loss(), 0);
        let tags = find_camsim_tags(f.data());
        assert_eq!(tags.len(), 1);
        if let Some(prev) = last {
            assert_eq!(tags[0].1, prev + 1);
        }
        last = Some(tags[0].1);
    }
    drop(half);
    drop(stuck);
    sim.shutdown().await;
}

#[tokio::test]
async fn fast_pacing_outruns_realtime() {
    let mut cfg = CamSimConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        1,
        fixture("h264-360p25-small.mp4"),
    );
    cfg.pacing = Pacing::Fast;
    let sim = CamSim::start(cfg).await.unwrap();
    let mut d = play(&sim.url(1), None).await.unwrap();
    let start = Instant::now();
    for _ in 0..600 {
        frame(&mut d).await;
    }
    // 600 frames are 24 s of media; fast pacing takes a fraction of that even on a busy machine.
    let took = start.elapsed();
    eprintln!("600 frames in {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    sim.shutdown().await;
}
