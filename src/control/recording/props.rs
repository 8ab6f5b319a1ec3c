//! Recording properties and the Recording object, sans-IO: the `POST /recordings/start` body
//! checked and completed from the session's `defaultRecordingProperties` exactly as OpenVidu
//! 2.32's `RecordingProperties.fromJson` does, and the Recording JSON of its `Recording.toJson`.

use serde_json::{Map, Value, json};

/// Unix epoch milliseconds.
pub type Ms = u64;

/// `INDIVIDUAL`, `COMPOSED` or `COMPOSED_QUICK_START`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    Composed,
    ComposedQuickStart,
    Individual,
}

impl OutputMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputMode::Composed => "COMPOSED",
            OutputMode::ComposedQuickStart => "COMPOSED_QUICK_START",
            OutputMode::Individual => "INDIVIDUAL",
        }
    }

    pub fn parse(s: &str) -> Option<OutputMode> {
        match s {
            "COMPOSED" => Some(OutputMode::Composed),
            "COMPOSED_QUICK_START" => Some(OutputMode::ComposedQuickStart),
            "INDIVIDUAL" => Some(OutputMode::Individual),
            _ => None,
        }
    }

    pub fn is_composed(self) -> bool {
        self != OutputMode::Individual
    }
}

/// The recording layouts OpenVidu 2.32 names.
pub const LAYOUTS: &[&str] = &[
    "BEST_FIT",
    "PICTURE_IN_PICTURE",
    "VERTICAL_PRESENTATION",
    "HORIZONTAL_PRESENTATION",
    "CUSTOM",
];

/// The final properties of one recording.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingProps {
    /// Empty until the manager names the recording after its id.
    pub name: String,
    pub has_audio: bool,
    pub has_video: bool,
    pub output_mode: OutputMode,
    /// COMPOSED with video only.
    pub recording_layout: Option<String>,
    pub resolution: Option<String>,
    pub frame_rate: Option<i64>,
    pub shm_size: Option<i64>,
    /// CUSTOM layout only.
    pub custom_layout: Option<String>,
    /// INDIVIDUAL only.
    pub ignore_failed_streams: Option<bool>,
    pub media_node: Option<String>,
}

/// Why a properties object was refused: OpenVidu answers 400 to a type error or bad value
/// (`IllegalArgumentException`) and 422 to an out-of-range one (`IllegalStateException`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropsError {
    BadRequest(String),
    Unprocessable(String),
}

impl PropsError {
    pub fn message(&self) -> &str {
        match self {
            PropsError::BadRequest(m) | PropsError::Unprocessable(m) => m,
        }
    }
}

/// `AxB`, each 100..=1999 without a leading zero (OpenVidu's `isAcceptableRecordingResolution`).
pub fn valid_resolution(s: &str) -> bool {
    let side = |p: &str| {
        let b = p.as_bytes();
        let digits = b.iter().all(u8::is_ascii_digit);
        digits && b.first() != Some(&b'0') && (b.len() == 3 || (b.len() == 4 && b[0] == b'1'))
    };
    match s.split_once('x') {
        Some((w, h)) => side(w) && side(h),
        None => false,
    }
}

/// `[a-zA-Z0-9_\-~]+` (OpenVidu's `isValidRecordingName`).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'~')
}

fn type_error() -> PropsError {
    PropsError::BadRequest("Type error in some parameter".into())
}

fn opt_str<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, PropsError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error()),
    }
}

fn opt_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, PropsError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(type_error()),
    }
}

/// A JSON number as Java's `Number.intValue()` / `longValue()` sees it (fractions truncated).
fn opt_num(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, PropsError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(type_error),
        Some(_) => Err(type_error()),
    }
}

/// The `mediaNode` of a body: a string or `{"id": string}`.
fn media_node(m: &Map<String, Value>) -> Result<Option<String>, PropsError> {
    match m.get("mediaNode") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(PropsError::BadRequest("Wrong 'mediaNode' parameter. Wrong type".into())),
        },
        Some(_) => Err(PropsError::BadRequest("Wrong 'mediaNode' parameter. Wrong type".into())),
    }
}

/// Checks `params` and completes it from `defaults` (a session's normalised
/// `defaultRecordingProperties`, or `None` at session creation).
pub fn parse(
    params: &Map<String, Value>,
    defaults: Option<&Map<String, Value>>,
) -> Result<RecordingProps, PropsError> {
    let empty = Map::new();
    let d = defaults.unwrap_or(&empty);
    // Defaults were validated when the session was created; a missing key takes OpenVidu's
    // DefaultValues.
    let d_name = opt_str(d, "name").ok().flatten().unwrap_or("");
    let d_audio = opt_bool(d, "hasAudio").ok().flatten().unwrap_or(true);
    let d_video = opt_bool(d, "hasVideo").ok().flatten().unwrap_or(true);
    let d_mode = opt_str(d, "outputMode")
        .ok()
        .flatten()
        .and_then(OutputMode::parse)
        .unwrap_or(OutputMode::Composed);
    let d_layout = opt_str(d, "recordingLayout").ok().flatten().unwrap_or("BEST_FIT");
    let d_resolution = opt_str(d, "resolution").ok().flatten().unwrap_or("1280x720");
    let d_frame_rate = opt_num(d, "frameRate").ok().flatten().unwrap_or(25);
    let d_shm = opt_num(d, "shmSize").ok().flatten().unwrap_or(536_870_912);
    let d_custom = opt_str(d, "customLayout").ok().flatten().unwrap_or("");
    let d_ignore = opt_bool(d, "ignoreFailedStreams").ok().flatten().unwrap_or(false);
    let d_node = media_node(d).ok().flatten();

    let _session = opt_str(params, "session")?;
    let name = opt_str(params, "name")?;
    let has_audio = opt_bool(params, "hasAudio")?;
    let has_video = opt_bool(params, "hasVideo")?;
    let mode = opt_str(params, "outputMode")?;
    let layout = opt_str(params, "recordingLayout")?;
    let resolution = opt_str(params, "resolution")?;
    let frame_rate = opt_num(params, "frameRate")?;
    let shm = opt_num(params, "shmSize")?;
    let custom = opt_str(params, "customLayout")?;
    let ignore = opt_bool(params, "ignoreFailedStreams")?;

    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) if !valid_name(n) => {
            return Err(PropsError::BadRequest(
                "Parameter 'name' is wrong. Must be an alphanumeric string [a-zA-Z0-9_-~]+".into(),
            ));
        }
        Some(n) => n.to_string(),
        None => d_name.to_string(),
    };
    let has_audio = has_audio.unwrap_or(d_audio);
    let has_video = has_video.unwrap_or(d_video);
    if !has_audio && !has_video {
        return Err(PropsError::Unprocessable(
            "Cannot start a recording with both \"hasAudio\" and \"hasVideo\" set to false".into(),
        ));
    }
    let output_mode = match mode {
        Some(s) => {
            let m = OutputMode::parse(s).ok_or_else(|| {
                PropsError::BadRequest("Type error in parameter 'outputMode'".into())
            })?;
            // COMPOSED and COMPOSED_QUICK_START follow the session's default between them.
            match (defaults.map(|_| d_mode), m) {
                (Some(OutputMode::ComposedQuickStart), OutputMode::Composed) => {
                    OutputMode::ComposedQuickStart
                }
                (Some(OutputMode::Composed), OutputMode::ComposedQuickStart) => {
                    OutputMode::Composed
                }
                _ => m,
            }
        }
        None => d_mode,
    };
    let mut props = RecordingProps {
        name,
        has_audio,
        has_video,
        output_mode,
        recording_layout: None,
        resolution: None,
        frame_rate: None,
        shm_size: None,
        custom_layout: None,
        ignore_failed_streams: None,
        media_node: None,
    };
    if output_mode.is_composed() {
        let layout = match layout {
            Some(l) if LAYOUTS.contains(&l) => l.to_string(),
            Some(_) => {
                return Err(PropsError::BadRequest(
                    "Type error in parameter 'recordingLayout'".into(),
                ));
            }
            None => d_layout.to_string(),
        };
        let resolution = match resolution {
            Some(r) if !valid_resolution(r) => {
                return Err(PropsError::Unprocessable(
                    "Wrong 'resolution' parameter. Acceptable values from 100 to 1999 for both width and height".into(),
                ));
            }
            Some(r) => r.to_string(),
            None => d_resolution.to_string(),
        };
        let frame_rate = match frame_rate {
            // Java's intValue() of a long wraps to 32 bits before the range check.
            Some(f) if !(1..=120).contains(&(f as i32)) => {
                return Err(PropsError::Unprocessable(
                    "Wrong 'frameRate' parameter. Acceptable values are within range [1,120]"
                        .into(),
                ));
            }
            Some(f) => f as i32 as i64,
            None => d_frame_rate,
        };
        let shm = match shm {
            Some(s) if s < 134_217_728 => {
                return Err(PropsError::Unprocessable(
                    "Wrong 'shmSize' parameter. Must be 134217728 (128 MB) minimum".into(),
                ));
            }
            Some(s) => s,
            None => d_shm,
        };
        if has_video {
            props.custom_layout = (layout == "CUSTOM")
                .then(|| custom.map(str::to_string).unwrap_or_else(|| d_custom.to_string()));
            props.recording_layout = Some(layout);
            props.resolution = Some(resolution);
            props.frame_rate = Some(frame_rate);
            props.shm_size = Some(shm);
        }
        props.media_node = match d_node {
            Some(n) => Some(n),
            None => media_node(params)?,
        }
        .filter(|n| !n.is_empty());
    } else {
        props.ignore_failed_streams = Some(ignore.unwrap_or(d_ignore));
    }
    Ok(props)
}

/// Recording status (OpenVidu's `Recording.Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Starting,
    Started,
    Stopped,
    Ready,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Started => "started",
            Status::Stopped => "stopped",
            Status::Ready => "ready",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "starting" => Some(Status::Starting),
            "started" => Some(Status::Started),
            "stopped" => Some(Status::Stopped),
            "ready" => Some(Status::Ready),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }

    /// Being recorded: the session counts as recording and the recording cannot be deleted.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Starting | Status::Started)
    }
}

/// One recording as OpenVidu describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    pub id: String,
    pub session_id: String,
    pub unique_session_id: String,
    pub created_at: Ms,
    pub props: RecordingProps,
    pub status: Status,
    /// Bytes (sum of the stream files).
    pub size: u64,
    /// Seconds.
    pub duration: f64,
    /// Set once ready or failed.
    pub url: Option<String>,
}

impl Recording {
    /// The file the recording's `url` names: `<name>.zip` (INDIVIDUAL), `.mp4` (COMPOSED with
    /// video) or `.webm` (COMPOSED audio-only).
    pub fn file_name(&self) -> String {
        let ext = match (self.props.output_mode, self.props.has_video) {
            (OutputMode::Individual, _) => "zip",
            (_, true) => "mp4",
            (_, false) => "webm",
        };
        format!("{}.{ext}", self.props.name)
    }

    /// OpenVidu's `Recording.toJson(withUniqueSessionId)`.
    pub fn to_json(&self, with_unique_session_id: bool) -> Value {
        let p = &self.props;
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!("recording"));
        m.insert("name".into(), json!(p.name));
        m.insert("outputMode".into(), json!(p.output_mode.as_str()));
        if p.output_mode.is_composed() && p.has_video {
            m.insert("resolution".into(), json!(p.resolution));
            m.insert("frameRate".into(), json!(p.frame_rate));
            m.insert("recordingLayout".into(), json!(p.recording_layout));
            if let Some(c) = &p.custom_layout {
                m.insert("customLayout".into(), json!(c));
            }
        }
        m.insert("sessionId".into(), json!(self.session_id));
        if with_unique_session_id {
            m.insert("uniqueSessionId".into(), json!(self.unique_session_id));
        }
        if let Some(n) = &p.media_node {
            m.insert("mediaNode".into(), json!(n));
        }
        m.insert("createdAt".into(), json!(self.created_at));
        m.insert("size".into(), json!(self.size));
        m.insert("duration".into(), json!(self.duration));
        m.insert("url".into(), json!(self.url));
        m.insert("hasAudio".into(), json!(p.has_audio));
        m.insert("hasVideo".into(), json!(p.has_video));
        m.insert("status".into(), json!(self.status.as_str()));
        Value::Object(m)
    }

    /// Reads back what [`Recording::to_json`]`(true)` wrote (the `.recording.<id>` entity
    /// file); `None` when a required field is missing or mistyped.
    pub fn from_json(v: &Value) -> Option<Recording> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mode = OutputMode::parse(v.get("outputMode")?.as_str()?)?;
        let has_video = v.get("hasVideo")?.as_bool()?;
        let composed_video = mode.is_composed() && has_video;
        let props = RecordingProps {
            name: s("name")?,
            has_audio: v.get("hasAudio")?.as_bool()?,
            has_video,
            output_mode: mode,
            recording_layout: s("recordingLayout").filter(|_| composed_video),
            resolution: s("resolution").filter(|_| composed_video),
            frame_rate: v.get("frameRate").and_then(Value::as_i64).filter(|_| composed_video),
            shm_size: None,
            custom_layout: s("customLayout").filter(|_| composed_video),
            ignore_failed_streams: None,
            media_node: s("mediaNode"),
        };
        Some(Recording {
            id: s("id")?,
            session_id: s("sessionId")?,
            unique_session_id: s("uniqueSessionId").unwrap_or_default(),
            created_at: v.get("createdAt")?.as_u64()?,
            props,
            status: Status::parse(v.get("status")?.as_str()?)?,
            size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
            duration: v.get("duration").and_then(Value::as_f64).unwrap_or(0.0),
            url: s("url"),
        })
    }
}

/// OpenVidu's `RecordingManager.finalReason`: a participant leaving ends a recording with
/// `lastParticipantLeft`.
pub fn final_reason(reason: &str) -> &str {
    match reason {
        "disconnect"
        | "forceDisconnectByUser"
        | "forceDisconnectByServer"
        | "networkDisconnect" => "lastParticipantLeft",
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn resolution_rule() {
        for ok in ["1280x720", "100x100", "1999x1999", "640x1080"] {
            assert!(valid_resolution(ok), "{ok}");
        }
        for bad in ["99x100", "2000x720", "0640x480", "1280X720", "1280x", "x", "", "12a0x720"] {
            assert!(!valid_resolution(bad), "{bad}");
        }
    }

    #[test]
    fn start_body_checks_and_defaults() {
        let p = parse(&obj(json!({"session": "s"})), None).unwrap();
        assert_eq!(p.output_mode, OutputMode::Composed);
        assert_eq!(p.resolution.as_deref(), Some("1280x720"));
        let d = obj(json!({"name": "", "hasAudio": true, "hasVideo": true,
            "outputMode": "INDIVIDUAL", "ignoreFailedStreams": true}));
        let p = parse(&obj(json!({"session": "s", "name": ""})), Some(&d)).unwrap();
        assert_eq!(p.output_mode, OutputMode::Individual);
        assert_eq!(p.ignore_failed_streams, Some(true));
        assert_eq!(p.resolution, None);
        let err = |v: Value| parse(&obj(v), None).unwrap_err();
        assert!(matches!(err(json!({"name": "a b"})), PropsError::BadRequest(_)));
        assert!(matches!(err(json!({"hasAudio": "yes"})), PropsError::BadRequest(_)));
        assert!(matches!(err(json!({"outputMode": "MOSAIC"})), PropsError::BadRequest(_)));
        assert!(matches!(err(json!({"recordingLayout": "GRID"})), PropsError::BadRequest(_)));
        assert!(matches!(
            err(json!({"hasAudio": false, "hasVideo": false})),
            PropsError::Unprocessable(_)
        ));
        assert!(matches!(err(json!({"resolution": "4000x720"})), PropsError::Unprocessable(_)));
        assert!(matches!(err(json!({"frameRate": 0})), PropsError::Unprocessable(_)));
        assert!(matches!(err(json!({"frameRate": 121})), PropsError::Unprocessable(_)));
        assert!(matches!(err(json!({"shmSize": 1000})), PropsError::Unprocessable(_)));
        // INDIVIDUAL ignores the COMPOSED-only keys, as OpenVidu does.
        assert!(parse(&obj(json!({"outputMode": "INDIVIDUAL", "frameRate": 0})), None).is_ok());
    }

    #[test]
    fn json_round_trip() {
        let r = Recording {
            id: "s~1".into(),
            session_id: "s".into(),
            unique_session_id: "s_1".into(),
            created_at: 5,
            props: parse(&obj(json!({"name": "n", "outputMode": "COMPOSED"})), None).unwrap(),
            status: Status::Ready,
            size: 10,
            duration: 1.5,
            url: Some("http://x/openvidu/recordings/s~1/n.mp4".into()),
        };
        let mut back = Recording::from_json(&r.to_json(true)).unwrap();
        back.props.shm_size = r.props.shm_size;
        assert_eq!(back, r);
        assert_eq!(r.to_json(false).get("uniqueSessionId"), None);
        assert_eq!(r.file_name(), "n.mp4");
    }
}
