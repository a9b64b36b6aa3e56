//! A Hikvision NVR's camera list, following the Hikvision ISAPI developer guide ("ISAPI Core
//! Protocol", resource `/ISAPI/ContentMgmt/InputProxy/channels`, `InputProxyChannelList` in the
//! `http://www.hikvision.com/ver20/XMLSchema` namespace).

pub const PATH: &str = "/ISAPI/ContentMgmt/InputProxy/channels";

/// One `InputProxyChannel`: (id, name, proxyProtocol, ipAddress, managePortNo).
pub fn channel(id: u32, name: &str, protocol: &str, ip: &str, port: u16) -> String {
    format!(
        "<InputProxyChannel version=\"2.0\"><id>{id}</id><name>{name}</name><sourceInputPortDescriptor>\
<proxyProtocol>{protocol}</proxyProtocol><addressingFormatType>ipaddress</addressingFormatType><ipAddress>{ip}</ipAddress>\
<managePortNo>{port}</managePortNo><srcInputPort>1</srcInputPort><userName>admin</userName><streamType>auto</streamType>\
</sourceInputPortDescriptor><enableAnr>false</enableAnr></InputProxyChannel>"
    )
}

pub fn list(channels: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InputProxyChannelList version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\">{}</InputProxyChannelList>",
        channels.concat()
    )
}
