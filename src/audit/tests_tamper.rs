//! Tamper tests: each kind of edit to the log is detected and named (file and line).

use std::fs;
use std::path::{Path, PathBuf};

use super::segment::{SegmentName, MANIFEST};
use super::tests::{has, intact, lines, problems, segments, write_lines, write_log};
use super::*;

#[test]
fn tamper_edit_a_field_is_named() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 50, 1 << 20);
    let seg = &segments(d.path())[0];
    let mut ls = lines(seg);
    ls[9] = ls[9].replace("\"CKR_OK\"", "\"CKR_NO\"");
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(10), "altered"), "{ps:?}");
}

#[test]
fn tamper_any_single_byte_is_detected() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 30, 1 << 20);
    let seg = segments(d.path())[0].clone();
    let orig = fs::read(&seg).unwrap();
    // Every byte of line 20 (and its newline), flipped one at a time.
    let start: usize = orig
        .split(|&b| b == b'\n')
        .take(19)
        .map(|l| l.len() + 1)
        .sum();
    let len = orig[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    for pos in start..start + len {
        let mut data = orig.clone();
        data[pos] = if data[pos] == b'1' { b'2' } else { b'1' };
        fs::write(&seg, &data).unwrap();
        let rep = verify(d.path());
        assert!(
            !rep.is_intact(),
            "byte {} of line 20 changed undetected",
            pos - start
        );
    }
    fs::write(&seg, &orig).unwrap();
    intact(d.path());
}

#[test]
fn tamper_edit_last_line_of_sealed_segment() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 20, 1 << 20);
    let seg = &segments(d.path())[0];
    let mut ls = lines(seg);
    ls[19] = ls[19].replace("hsm-1", "hsm-9");
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(20), "seal"), "{ps:?}");
}

#[test]
fn tamper_delete_a_line() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 50, 1 << 20);
    let seg = &segments(d.path())[0];
    let mut ls = lines(seg);
    ls.remove(9);
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(10), "removed"), "{ps:?}");
}

#[test]
fn tamper_delete_trailing_lines_of_sealed_segment() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 50, 1 << 20);
    let seg = &segments(d.path())[0];
    let mut ls = lines(seg);
    ls.truncate(47);
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(47), "seal"), "{ps:?}");
}

#[test]
fn tamper_swap_two_lines() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 50, 1 << 20);
    let seg = &segments(d.path())[0];
    let mut ls = lines(seg);
    ls.swap(20, 21);
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(21), "reordered"), "{ps:?}");
    assert!(has(&ps, seg, Some(22), "reordered"), "{ps:?}");
}

#[test]
fn tamper_truncate_last_line() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 50, 1 << 20);
    let seg = &segments(d.path())[0];
    let data = fs::read(seg).unwrap();
    fs::write(seg, &data[..data.len() - 20]).unwrap();
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(50), "torn tail"), "{ps:?}");
}

#[test]
fn tamper_insert_a_line() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 50, 1 << 20);
    let seg = &segments(d.path())[0];
    // A duplicate of a record...
    let mut ls = lines(seg);
    ls.insert(5, ls[4].clone());
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(6), "inserted"), "{ps:?}");
    // ...and a forged record that chains to its predecessor but not to its successor.
    let mut ls = lines(seg);
    ls.remove(5);
    let prev = hex::encode(super::event::line_hash(ls[29].as_bytes()));
    let l30 = &ls[30];
    let forged = format!("{}{prev}\"}}", &l30[..l30.len() - 66]).replace("hsm-0", "hsm-X");
    assert!(forged.contains(&prev) && forged.contains("hsm-X"));
    ls.insert(30, forged);
    write_lines(seg, &ls);
    let ps = problems(d.path());
    assert!(has(&ps, seg, Some(32), "reordered"), "{ps:?}");
}

pub(super) fn rotated_log(dir: &Path) -> Vec<PathBuf> {
    write_log(dir, 300, 4096);
    let segs = segments(dir);
    assert!(
        segs.len() >= 4,
        "expected rotation, got {} segment(s)",
        segs.len()
    );
    segs
}

#[test]
fn tamper_delete_a_whole_segment() {
    let d = tempfile::tempdir().unwrap();
    let segs = rotated_log(d.path());
    fs::remove_file(&segs[1]).unwrap();
    let ps = problems(d.path());
    assert!(has(&ps, &segs[1], None, "missing"), "{ps:?}");
    assert!(has(&ps, &segs[2], Some(1), "missing"), "{ps:?}");
    // The last one too (nothing follows it, the manifest still knows it).
    let d = tempfile::tempdir().unwrap();
    let segs = rotated_log(d.path());
    let last = segs.last().unwrap();
    fs::remove_file(last).unwrap();
    let ps = problems(d.path());
    assert!(has(&ps, last, None, "missing"), "{ps:?}");
}

#[test]
fn tamper_rename_a_segment() {
    let d = tempfile::tempdir().unwrap();
    let segs = rotated_log(d.path());
    let mut n = SegmentName::parse(segs[2].file_name().unwrap().to_str().unwrap()).unwrap();
    n.pid += 1;
    let renamed = d.path().join(n.file_name());
    fs::rename(&segs[2], &renamed).unwrap();
    let ps = problems(d.path());
    assert!(has(&ps, &segs[2], None, "missing"), "{ps:?}");
    assert!(has(&ps, &renamed, None, "not listed"), "{ps:?}");
    // Renamed to something that is not a segment name at all.
    fs::rename(&renamed, d.path().join("old.jsonl")).unwrap();
    let ps = problems(d.path());
    assert!(
        has(&ps, &d.path().join("old.jsonl"), None, "not listed"),
        "{ps:?}"
    );
}

#[test]
fn tamper_manifest_edit_and_removal() {
    let d = tempfile::tempdir().unwrap();
    rotated_log(d.path());
    let m = d.path().join(MANIFEST);
    let mut ls = lines(&m);
    ls[0] = ls[0].replace("create", "crEate");
    write_lines(&m, &ls);
    let ps = problems(d.path());
    assert!(
        ps.iter().any(|p| p.file == m && p.line == Some(2)),
        "{ps:?}"
    );
    fs::remove_file(&m).unwrap();
    let ps = problems(d.path());
    assert!(has(&ps, &m, None, "missing"), "{ps:?}");
}
