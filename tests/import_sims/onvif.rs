//! An ONVIF camera (Profile S) made with the third-party `onvif-server` crate: WS-UsernameToken
//! auth, one profile whose stream URI is a camsim camera.

use std::net::SocketAddr;

use async_trait::async_trait;
use onvif_server::{DeviceInfo, DeviceService, MediaService, OnvifError, OnvifServer};

#[derive(Clone)]
struct Cam {
    stream: String,
    serial: String,
}

#[async_trait]
impl DeviceService for Cam {
    async fn get_device_information(&self) -> Result<DeviceInfo, OnvifError> {
        Ok(DeviceInfo {
            manufacturer: "SimCam".into(),
            model: "S-1".into(),
            firmware_version: "1.0".into(),
            serial_number: self.serial.clone(),
            hardware_id: "sim".into(),
        })
    }
}

#[async_trait]
impl MediaService for Cam {
    async fn get_stream_uri(&self, _profile: &str) -> Result<String, OnvifError> {
        Ok(self.stream.clone())
    }
}

pub struct OnvifCam {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OnvifCam {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OnvifCam {
    /// An ONVIF device on `ip` (port 0) with user `admin` / `password`, streaming `stream`.
    pub async fn start(ip: &str, password: &str, stream: String) -> OnvifCam {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cam = Cam { stream, serial: format!("SN-{}", addr.port()) };
        let router = OnvifServer::builder()
            .port(addr.port())
            .advertised_host(ip)
            .device_service(cam.clone())
            .media_service(cam)
            .auth("admin", password)
            .build()
            .unwrap()
            .into_router()
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        OnvifCam { addr, task }
    }

    pub fn source(&self) -> String {
        format!("onvif://{}", self.addr)
    }
}
