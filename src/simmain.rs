//! A simulated main recorder for demos, drills and tests: a loopback TCP listener that can be
//! taken down and brought back on the same port, like an NVR losing power.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct SimMain {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl SimMain {
    /// Starts listening on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr) -> std::io::Result<SimMain> {
        let mut m = SimMain { addr, task: None };
        m.up().await?;
        Ok(m)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_up(&self) -> bool {
        self.task.is_some()
    }

    /// Accepts connections (and answers any HTTP request with 200) until `down`.
    pub async fn up(&mut self) -> std::io::Result<()> {
        if self.task.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf)).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                });
            }
        }));
        Ok(())
    }

    /// Stops listening: connects are refused from now on.
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for SimMain {
    fn drop(&mut self) {
        self.down();
    }
}
