//! Camera simulator: an RTSP/1.0 server looping fixture clips as many cameras.
