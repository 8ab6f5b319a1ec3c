//! The files of a recording, as OpenVidu 2.32 lays them out in `<recording path>/<id>/`:
//! - `.recording.<id>`: the Recording JSON (with `uniqueSessionId`), rewritten at every status
//!   change; the recordings are listed from these at start-up;
//! - INDIVIDUAL, once stopped: `<name>.zip` holding each stream's file and `<name>.json`
//!   (`createdAt`, `id`, `name`, `sessionId`, `files[]` with `name`, `connectionId`,
//!   `streamId`, `size`, `clientData`, `serverData`, `hasAudio`, `hasVideo`, `typeOfVideo` for
//!   video, `startTimeOffset`, `endTimeOffset`), deflated; then, as OpenVidu does, only
//!   `.recording.<id>` and the zip remain;
//! - COMPOSED: the composer's one file (`<name>.mp4` or `.webm`), as it wrote it.
//!
//! Blocking file I/O: [`finalize`] runs on tokio's blocking pool (`spawn_blocking`). The zip is
//! written as `<name>.zip.part` and renamed when complete, so no half-written file is ever in
//! place of a ready recording's.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::props::{OutputMode, Recording};

/// The entity file's name prefix (OpenVidu's `RECORDING_ENTITY_FILE`).
pub const ENTITY_PREFIX: &str = ".recording.";

/// A recorder's finished file.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    pub file: PathBuf,
    pub size: u64,
    pub start_time_offset: i64,
    pub end_time_offset: i64,
}

/// One stream's file and what `<name>.json` says of it.
#[derive(Clone, Debug)]
pub struct StreamFile {
    pub done: Done,
    pub connection_id: String,
    pub stream_id: String,
    pub client_data: String,
    pub server_data: String,
    pub has_audio: bool,
    pub has_video: bool,
    pub type_of_video: Option<String>,
}

impl StreamFile {
    /// The composed file (no stream of its own).
    pub fn composed(done: Done) -> StreamFile {
        StreamFile {
            done,
            connection_id: String::new(),
            stream_id: String::new(),
            client_data: String::new(),
            server_data: String::new(),
            has_audio: false,
            has_video: false,
            type_of_video: None,
        }
    }
}

/// What to seal once every recorder of a stopped recording is done.
#[derive(Clone, Debug)]
pub struct Job {
    pub dir: PathBuf,
    pub rec: Recording,
    pub files: Vec<StreamFile>,
    /// A recorder failed (and failures are not ignored): the recording is `failed`.
    pub failure: Option<String>,
    pub reason: Option<String>,
}

/// How sealing ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ready { size: u64, duration: f64 },
    Failed(String),
}

/// Writes `.recording.<id>` (whole file replaced atomically).
pub fn write_entity(dir: &Path, rec: &Recording) -> io::Result<()> {
    let path = dir.join(format!("{ENTITY_PREFIX}{}", rec.id));
    let tmp = dir.join(format!("{ENTITY_PREFIX}{}.part", rec.id));
    fs::write(&tmp, rec.to_json(true).to_string())?;
    fs::rename(&tmp, &path)
}

/// The recordings whose entity files are under `root/<id>/`.
pub fn load_all(root: &Path) -> Vec<Recording> {
    let Ok(dirs) = fs::read_dir(root) else { return Vec::new() };
    let mut out = Vec::new();
    for d in dirs.flatten() {
        let id = d.file_name().to_string_lossy().into_owned();
        let entity = d.path().join(format!("{ENTITY_PREFIX}{id}"));
        let Ok(text) = fs::read_to_string(&entity) else { continue };
        match serde_json::from_str::<Value>(&text).ok().as_ref().and_then(Recording::from_json) {
            Some(r) if r.id == id => out.push(r),
            _ => tracing::warn!(file = %entity.display(), "unreadable recording entity file"),
        }
    }
    out
}

/// `<name>.json` of an INDIVIDUAL recording.
pub fn sync_json(rec: &Recording, files: &[StreamFile]) -> Value {
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            let name = f.done.file.file_name().map(|n| n.to_string_lossy().into_owned());
            let mut o = json!({
                "name": name,
                "connectionId": f.connection_id,
                "streamId": f.stream_id,
                "size": f.done.size,
                "clientData": f.client_data,
                "serverData": f.server_data,
                "hasAudio": f.has_audio && rec.props.has_audio,
                "hasVideo": f.has_video && rec.props.has_video,
            });
            if f.has_video {
                o["typeOfVideo"] = json!(f.type_of_video);
            }
            o["startTimeOffset"] = json!(f.done.start_time_offset);
            o["endTimeOffset"] = json!(f.done.end_time_offset);
            o
        })
        .collect();
    json!({
        "createdAt": rec.created_at,
        "id": rec.id,
        "name": rec.props.name,
        "sessionId": rec.session_id,
        "files": files,
    })
}

/// Size (sum of the files) and duration (first start to last end, seconds) as OpenVidu
/// computes them.
pub fn totals(files: &[StreamFile]) -> (u64, f64) {
    let size = files.iter().map(|f| f.done.size).sum();
    let start = files.iter().map(|f| f.done.start_time_offset).min();
    let end = files.iter().map(|f| f.done.end_time_offset).max();
    let duration = match (start, end) {
        (Some(s), Some(e)) if e > s => (e - s) as f64 / 1000.0,
        _ => 0.0,
    };
    (size, duration)
}

/// A file a recorder reports must be a plain file directly inside the recording's directory.
fn inside(dir: &Path, file: &Path) -> bool {
    file.parent() == Some(dir) && file.file_name().is_some_and(|n| !n.is_empty())
}

/// Seals a stopped recording (blocking).
pub fn finalize(job: &Job) -> Outcome {
    if let Some(why) = &job.failure {
        return Outcome::Failed(why.clone());
    }
    for f in &job.files {
        if !inside(&job.dir, &f.done.file) {
            return Outcome::Failed(format!(
                "recorder file {} is outside {}",
                f.done.file.display(),
                job.dir.display()
            ));
        }
        match fs::metadata(&f.done.file) {
            Ok(m) if m.is_file() => {}
            _ => return Outcome::Failed(format!("missing file {}", f.done.file.display())),
        }
    }
    let (size, duration) = totals(&job.files);
    if job.rec.props.output_mode != OutputMode::Individual {
        return Outcome::Ready { size, duration };
    }
    match write_individual(job) {
        Ok(()) => Outcome::Ready { size, duration },
        Err(e) => Outcome::Failed(format!("cannot write {}.zip: {e}", job.rec.props.name)),
    }
}

/// `<name>.json`, then `<name>.zip` of the stream files and the json; then the originals go.
fn write_individual(job: &Job) -> io::Result<()> {
    let name = &job.rec.props.name;
    let json_path = job.dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&sync_json(&job.rec, &job.files))
        .map_err(|e| io::Error::other(e.to_string()))?;
    fs::write(&json_path, text)?;
    let zip_path = job.dir.join(format!("{name}.zip"));
    let part = job.dir.join(format!("{name}.zip.part"));
    let written = (|| -> io::Result<()> {
        let mut zip = zip::ZipWriter::new(BufWriter::new(File::create(&part)?));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        let mut entries: Vec<&Path> = job.files.iter().map(|f| f.done.file.as_path()).collect();
        entries.push(&json_path);
        for path in entries {
            let entry =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            zip.start_file(entry, opts).map_err(io::Error::other)?;
            io::copy(&mut File::open(path)?, &mut zip)?;
        }
        let mut out = zip.finish().map_err(io::Error::other)?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, &zip_path)?;
    for f in &job.files {
        let _ = fs::remove_file(&f.done.file);
    }
    let _ = fs::remove_file(&json_path);
    Ok(())
}
