//! Scanning a segment file's top-level boxes, and cutting off a torn tail.

use std::path::Path;

use super::ScanResult;

/// Reads the file's structure without trusting it: stops at the first incomplete, zero-sized
/// or unknown box and reports how much of the file is clean.
pub fn scan(path: &Path) -> std::io::Result<ScanResult> {
    todo!()
}

#[derive(Clone, Debug)]
pub struct RepairOutcome {
    pub scan: ScanResult,
    /// Bytes cut from the end (0 if the file was clean).
    pub truncated: u64,
}

/// Scans and truncates the file to its clean length (fsyncing it if it changed).
pub fn repair(path: &Path) -> std::io::Result<RepairOutcome> {
    todo!()
}
