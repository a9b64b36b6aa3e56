//! A Dahua NVR's camera list, following Dahua's "HTTP API for IPC & NVR" (config
//! `RemoteDevice` through `/cgi-bin/configManager.cgi?action=getConfig&name=RemoteDevice`):
//! `table.RemoteDevice.<device>.<field>=<value>` lines, the device key ending in the channel index.

pub const PATH: &str = "/cgi-bin/configManager.cgi";

/// One remote device at channel index `index` (0-based) with a main stream URL and a password
/// (`******` when masked, as newer firmware does).
pub fn device(index: u32, address: &str, url: &str, password: &str) -> String {
    let k = format!("table.RemoteDevice.System_CONFIG_NETCAMERA_INFO_{index}");
    format!(
        "{k}.Address={address}\r\n{k}.Enable=true\r\n{k}.Name=Cam {n}\r\n{k}.Port=37777\r\n{k}.ProtocolType=Private\r\n\
{k}.RtspPort=554\r\n{k}.UserName=admin\r\n{k}.Password={password}\r\n{k}.VideoInputs[0].MainStreamUrl={url}\r\n",
        n = index + 1
    )
}
