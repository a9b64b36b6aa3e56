//! Reading samples back out of a fragment (for export and playback).

use std::fs::File;

use bytes::Bytes;

use super::{FragmentInfo, SampleMeta};

/// The samples of one fragment with their data, in decode order.
pub fn read_fragment_samples(file: &File, frag: &FragmentInfo) -> std::io::Result<Vec<(SampleMeta, Bytes)>> {
    todo!()
}
