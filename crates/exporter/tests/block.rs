//! Block mode on a real loop device. Loop devices are required: without them this test fails loudly.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

use common::*;

struct LoopDev {
    dev: String,
    _img: tempfile::TempDir,
}

impl LoopDev {
    fn attach(size: u64, patterns: &[(u64, &[u8])]) -> LoopDev {
        let img = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = img.path().join("disk.img");
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(size).unwrap_or_else(|e| panic!("{e}"));
        for (off, data) in patterns {
            f.seek(SeekFrom::Start(*off)).unwrap_or_default();
            f.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        }
        f.sync_all().unwrap_or_default();
        let out = Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("losetup is required for block tests: {e}"));
        assert!(
            out.status.success(),
            "loop devices are required for block tests (run as root with loop support): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            dev.starts_with("/dev/loop"),
            "unexpected losetup output {dev:?}"
        );
        LoopDev { dev, _img: img }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn loop_device_is_served_with_ranges() {
    const SIZE: u64 = 48 * 1024 * 1024 + 4096;
    let lo = LoopDev::attach(
        SIZE,
        &[
            (0, b"BOOTSECTOR"),
            (1024 * 1024 - 3, b"straddle"),
            (33 * 1024 * 1024, b"middle"),
            (SIZE - 4, b"TAIL"),
        ],
    );
    let image = std::fs::read(lo._img.path().join("disk.img")).unwrap_or_default();
    let ex = Exporter::start(Opts::block(std::path::Path::new(&lo.dev)));
    let c = ex.client();

    // What `d8 data export list` does for Block.
    let r = c.req("HEAD", "/api/v1/block", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"data.img\"")
    );
    let etag = r.header("etag").unwrap_or_default().to_string();
    assert!(etag.starts_with("\"blk-"));

    // What `d8 data export download` does: the whole device.
    let r = c.get("/api/v1/block");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, SIZE);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&image));
    // Public prefix.
    assert_eq!(c.req("HEAD", "/ns1/exp1/api/v1/block", &[]).status, 200);

    // What `d8 snapshot download` does: exact 206 ranges.
    let r = c.req(
        "GET",
        "/api/v1/block",
        &[("Range", "bytes=1048573-1048580")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1048573-1048580/{SIZE}").as_str())
    );
    assert_eq!(r.body, b"straddle");
    let r = c.req("GET", "/api/v1/block", &[("Range", "bytes=-4")]);
    assert_eq!(r.body, b"TAIL");
    let r = c.req(
        "GET",
        "/api/v1/block",
        &[("Range", "bytes=0-9,34603008-34603013")],
    );
    assert_eq!(r.status, 206);
    assert!(r.text().contains("BOOTSECTOR") && r.text().contains("middle"));
    let r = c.req(
        "GET",
        "/api/v1/block",
        &[("Range", &format!("bytes={SIZE}-"))],
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{SIZE}").as_str())
    );
    let r = c.req(
        "GET",
        "/api/v1/block",
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"BOOTSECTOR"[..]));
    let r = c.req("GET", "/api/v1/block", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    // A large range crossing many read chunks.
    let r = c.req("GET", "/api/v1/block", &[("Range", "bytes=1000-20000000")]);
    assert_eq!(r.body, &image[1000..=20000000]);

    // Wrong endpoints.
    let r = c.get("/api/v1/files/");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "VolumeMode: Block. Not supported downloading files. Use /api/v1/block\n"
    );
    assert_eq!(c.get("/api/v1/block/extra").status, 400);
    assert_eq!(
        c.req("POST", "/api/v1/block", &[("Content-Length", "0")])
            .status,
        405
    );
    drop(ex);
}
