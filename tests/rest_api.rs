//! The OpenVidu 2 REST API over real loopback HTTP (spec §2).

mod common;

use common::{SECRET, start};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn session_lifecycle() {
    let s = start(|_| {}).await;
    // Exactly what node-client sends for createSession({customSessionId:"room-42"}).
    let body = json!({"mediaMode":"ROUTED","recordingMode":"MANUAL","customSessionId":"room-42",
        "defaultRecordingProperties":{"name":"","hasAudio":true,"hasVideo":true,"outputMode":"COMPOSED",
        "recordingLayout":"BEST_FIT","resolution":"1280x720","frameRate":25,"shmSize":536870912},
        "forcedVideoCodec": null, "allowTranscoding": null, "mediaNode": null});
    let (st, v) = s.post("/openvidu/api/sessions", body.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], "room-42");
    assert_eq!(v["sessionId"], "room-42");
    assert_eq!(v["object"], "session");
    assert_eq!(v["customSessionId"], "room-42");
    assert_eq!(v["mediaMode"], "ROUTED");
    assert_eq!(v["recordingMode"], "MANUAL");
    assert_eq!(v["recording"], false);
    assert_eq!(v["broadcasting"], false);
    assert_eq!(v["forcedVideoCodec"], "MEDIA_SERVER_PREFERRED");
    assert_eq!(v["allowTranscoding"], false);
    assert_eq!(v["defaultRecordingProperties"]["shmSize"], 536870912);
    assert_eq!(v["connections"]["numberOfElements"], 0);
    assert!(v["connections"]["content"].as_array().unwrap().is_empty());
    assert!(v["createdAt"].as_u64().unwrap() > 0);

    // Duplicate → 409 with an empty body.
    let r = s.req(Method::POST, "/openvidu/api/sessions").json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert!(r.text().await.unwrap().is_empty());

    // Generated id format.
    let (st, v) = s.post("/openvidu/api/sessions", json!({})).await;
    assert_eq!(st, 200);
    let gen_id = v["id"].as_str().unwrap().to_string();
    assert!(gen_id.starts_with("ses_") && gen_id.len() == 14, "{gen_id}");
    assert_eq!(v["customSessionId"], "");
    // Absent body works too.
    let r = s.req(Method::POST, "/openvidu/api/sessions").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Connection: pending shape.
    let (st, c) = s
        .post(
            "/openvidu/api/sessions/room-42/connection",
            json!({"type":"WEBRTC","data":"{\"user\":\"alice\"}","record":true,"role":"MODERATOR",
                   "kurentoOptions":{"videoMaxRecvBandwidth":500,"allowedFilters":["GStreamerFilter"]},
                   "rtspUri":null,"adaptativeBitrate":null,"onlyPlayWithSubscribers":null,"networkCache":null,
                   "customIceServers":[{"url":"turn:example.org:3478","username":"u","credential":"p"},{"url":"stun:example.org"}]}),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    let cid = c["connectionId"].as_str().unwrap().to_string();
    assert!(cid.starts_with("con_") && cid.len() == 14);
    assert_eq!(c["id"], cid);
    assert_eq!(c["object"], "connection");
    assert_eq!(c["status"], "pending");
    assert_eq!(c["sessionId"], "room-42");
    assert_eq!(c["role"], "MODERATOR");
    assert_eq!(c["type"], "WEBRTC");
    assert_eq!(c["serverData"], "{\"user\":\"alice\"}");
    assert_eq!(c["kurentoOptions"]["videoMaxRecvBandwidth"], 500);
    assert_eq!(c["customIceServers"][1], json!({"url":"stun:example.org"}));
    for k in ["activeAt", "location", "ip", "platform", "clientData", "publishers", "subscribers"] {
        assert!(c.get(k).is_some_and(Value::is_null), "{k} must be null: {c}");
    }
    let token = c["token"].as_str().unwrap();
    let prefix = format!(
        "ws://127.0.0.1:{}?sessionId=room-42&token=tok_",
        s.base.rsplit(':').next().unwrap()
    );
    assert!(token.starts_with(&prefix), "{token}");
    assert_eq!(token.len(), prefix.len() + 16);

    // GET session: pending connections only with ?pendingConnections=true.
    let (_, v) = s.get("/openvidu/api/sessions/room-42").await;
    assert_eq!(v["connections"]["numberOfElements"], 0);
    let (_, v) = s.get("/openvidu/api/sessions/room-42?pendingConnections=true").await;
    assert_eq!(v["connections"]["numberOfElements"], 1);
    assert_eq!(v["connections"]["content"][0]["connectionId"], cid);
    // List.
    let (st, v) = s.get("/openvidu/api/sessions?pendingConnections=true").await;
    assert_eq!(st, 200);
    assert_eq!(v["numberOfElements"], 3);
    let (_, v) = s.get("/openvidu/api/sessions?webRtcStats=true").await;
    assert_eq!(v["content"].as_array().unwrap().len(), 3);
    // Connections list (pending by default), get, patch.
    let (st, v) = s.get("/openvidu/api/sessions/room-42/connection").await;
    assert_eq!(st, 200);
    assert_eq!(v["numberOfElements"], 1);
    let (st, v) = s.get(&format!("/openvidu/api/sessions/room-42/connection/{cid}")).await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "pending");
    let r = s
        .req(Method::PATCH, &format!("/openvidu/api/sessions/room-42/connection/{cid}"))
        .json(&json!({"role": "SUBSCRIBER", "record": false}))
        .send()
        .await
        .unwrap();
    let (st, v) = common::status_json(r).await;
    assert_eq!(st, 200);
    assert_eq!(v["role"], "SUBSCRIBER");
    assert_eq!(v["record"], false);

    // Legacy token endpoint (node-client generateToken with nulls).
    let (st, t) = s
        .post(
            "/openvidu/api/tokens",
            json!({"session":"room-42","role":null,"data":null,"kurentoOptions":null,"record":true}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["id"], t["token"]);
    assert_eq!(t["session"], "room-42");
    assert_eq!(t["role"], "PUBLISHER");
    assert_eq!(t["data"], "");
    assert!(t["connectionId"].as_str().unwrap().starts_with("con_"));

    // Delete pending connection → 204, then 404.
    let path = format!("/openvidu/api/sessions/room-42/connection/{cid}");
    assert_eq!(s.delete(&path).await, 204);
    assert_eq!(s.delete(&path).await, 404);
    assert_eq!(s.get(&path).await.0, 404);

    // Delete session → 204, then gone; can be recreated.
    assert_eq!(s.delete("/openvidu/api/sessions/room-42").await, 204);
    assert_eq!(s.delete("/openvidu/api/sessions/room-42").await, 404);
    assert_eq!(s.get("/openvidu/api/sessions/room-42").await.0, 404);
    assert_eq!(s.post("/openvidu/api/sessions", json!({"customSessionId":"room-42"})).await.0, 200);
}

#[tokio::test]
async fn client_errors() {
    let s = start(|_| {}).await;
    let sid = s.session(Some("errs")).await;
    let bad_sessions = [
        json!({"mediaMode": 5}),
        json!({"mediaMode": "P2P"}),
        json!({"recordingMode": "SOMETIMES"}),
        json!({"customSessionId": "has space"}),
        json!({"customSessionId": 7}),
        json!({"forcedVideoCodec": "THEORA"}),
        json!({"allowTranscoding": "yes"}),
        json!({"defaultRecordingProperties": {"outputMode": "SIDE_BY_SIDE"}}),
        json!({"defaultRecordingProperties": 3}),
    ];
    for b in bad_sessions {
        let (st, v) = s.post("/openvidu/api/sessions", b.clone()).await;
        assert_eq!(st, 400, "{b} → {v}");
        assert_eq!(v["status"], 400);
        assert_eq!(v["error"], "Bad Request");
        assert_eq!(v["path"], "/openvidu/api/sessions");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["timestamp"].as_u64().is_some());
    }
    // Malformed JSON, non-object bodies, and serde_json's raw-value key at any depth (it could
    // come first once ringsfu writes the object back with its keys sorted; see
    // `signaling::has_reserved_key`).
    let reserved = r#"{"customSessionId":"rv","x":{"a":1,"$serde_json::private::RawValue":"{}"}}"#;
    for raw in ["{", "[1,2]", "\"x\"", reserved] {
        let r = s
            .req(Method::POST, "/openvidu/api/sessions")
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{raw}");
    }
    let conn_path = format!("/openvidu/api/sessions/{sid}/connection");
    let bad_conns = [
        json!({"type": "SIP"}),
        json!({"data": 5}),
        json!({"record": "no"}),
        json!({"role": "ADMIN"}),
        json!({"kurentoOptions": {"videoMaxRecvBandwidth": "a lot"}}),
        json!({"kurentoOptions": {"allowedFilters": [1]}}),
        json!({"customIceServers": [{"url": "http://x"}]}),
        json!({"customIceServers": [{"url": "turn:x:3478"}]}),
        json!({"customIceServers": [{"url": "stun:x", "username": "u", "credential": "c"}]}),
        json!({"customIceServers": "stun:x"}),
        json!({"type": "IPCAM", "rtspUri": "ftp://cam/x"}),
        json!({"type": "IPCAM"}),
    ];
    for b in bad_conns {
        let (st, v) = s.post(&conn_path, b.clone()).await;
        assert_eq!(st, 400, "{b} → {v}");
    }
    // staticAuthSecret yields TURN REST credentials.
    let (st, v) = s
        .post(
            &conn_path,
            json!({"customIceServers": [{"url": "turn:x:3478", "staticAuthSecret": "k"}]}),
        )
        .await;
    assert_eq!(st, 200);
    assert!(v["customIceServers"][0]["username"].as_str().unwrap().ends_with(":ringsfu"));
    // Unknown session.
    assert_eq!(s.post("/openvidu/api/sessions/nope/connection", json!({})).await.0, 404);
    assert_eq!(s.get("/openvidu/api/sessions/nope/connection").await.0, 404);
    assert_eq!(s.get("/openvidu/api/sessions/nope/connection/con_X").await.0, 400);
    assert_eq!(s.delete("/openvidu/api/sessions/nope/connection/con_X").await, 400);
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}/connection/con_X")).await, 404);
    assert_eq!(s.delete("/openvidu/api/sessions/nope/stream/str_CAM_X").await, 400);
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}/stream/str_CAM_X")).await, 404);
    let r = s
        .req(Method::PATCH, "/openvidu/api/sessions/nope/connection/con_X")
        .json(&json!({"role": "MODERATOR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = s
        .req(Method::PATCH, "/openvidu/api/sessions/errs/connection/con_X")
        .json(&json!({"role": "KING"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Tokens.
    assert_eq!(s.post("/openvidu/api/tokens", json!({})).await.0, 400);
    let (st, v) = s.post("/openvidu/api/tokens", json!({"session": "nope"})).await;
    assert_eq!(st, 404);
    assert_eq!(v["status"], 404);
    // Signals.
    let r = s.req(Method::POST, "/openvidu/api/signal").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(s.post("/openvidu/api/signal", json!({})).await.0, 400);
    assert_eq!(s.post("/openvidu/api/signal", json!({"session": sid, "to": "x"})).await.0, 400);
    assert_eq!(s.post("/openvidu/api/signal", json!({"session": sid, "to": [1]})).await.0, 400);
    assert_eq!(s.post("/openvidu/api/signal", json!({"session": "nope"})).await.0, 404);
    let (st, v) = s.post("/openvidu/api/signal", json!({"session": sid, "data": "x"})).await;
    assert_eq!(st, 406, "nobody connected");
    assert_eq!(v["status"], 406);
    // Unknown route under the API.
    assert_eq!(s.get("/openvidu/api/nothing-here").await.0, 404);
}

#[tokio::test]
async fn auth_cors_and_limits() {
    let s = start(|c| c.server.max_body_bytes = 4096).await;
    // Missing and wrong credentials.
    let r = s.http.get(s.url("/openvidu/api/sessions")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").unwrap().to_str().unwrap().starts_with("Basic"));
    let r = s
        .http
        .post(s.url("/openvidu/api/sessions"))
        .basic_auth("OPENVIDUAPP", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .get(s.url("/openvidu/api/sessions"))
        .basic_auth("OTHERUSER", Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Public URL is public and ends with '/'.
    let r = s.http.get(s.url("/openvidu/api/config/openvidu-publicurl")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), format!("{}/", s.base));
    // CORS preflight without auth.
    let r = s
        .http
        .request(Method::OPTIONS, s.url("/openvidu/api/sessions"))
        .header("Origin", "https://app.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "https://app.example.org");
    let r = s
        .req(Method::GET, "/openvidu/api/sessions")
        .header("Origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_some());
    // Oversized body → 413.
    let big = json!({"customSessionId": "x".repeat(8000)});
    let r = s.req(Method::POST, "/openvidu/api/sessions").json(&big).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
}

#[tokio::test]
async fn config_health_recordings_broadcast() {
    let s = start(|_| {}).await;
    let (st, v) = s.get("/openvidu/api/config").await;
    assert_eq!(st, 200);
    assert_eq!(v["VERSION"], "2.32.2");
    assert_eq!(v["OPENVIDU_PUBLICURL"], s.base);
    assert_eq!(v["OPENVIDU_RECORDING"], false);
    assert_eq!(v["OPENVIDU_WEBHOOK"], false);
    assert_eq!(v["OPENVIDU_SESSIONS_GARBAGE_THRESHOLD"], 3600);
    let r = s.req(Method::GET, "/openvidu/api/config/openvidu-version").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "2.32.2");
    let r = s.req(Method::GET, "/openvidu/api/config/openvidu-recording").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "false");
    let (st, v) = s.get("/openvidu/api/health").await;
    assert_eq!((st, v), (200, json!({"status": "UP"})));
    for (m, p) in [
        (Method::POST, "/openvidu/api/recordings/start"),
        (Method::POST, "/openvidu/api/recordings/stop/rec1"),
        (Method::GET, "/openvidu/api/recordings/rec1"),
        (Method::GET, "/openvidu/api/recordings"),
        (Method::DELETE, "/openvidu/api/recordings/rec1"),
    ] {
        let r = s.req(m.clone(), p).json(&json!({"session": "x"})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 501, "{m} {p}");
        assert!(r.text().await.unwrap().is_empty());
    }
    for p in ["/openvidu/api/broadcast/start", "/openvidu/api/broadcast/stop"] {
        let r = s.req(Method::POST, p).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{p}");
    }
    // Deprecated paths.
    let (st, v) = s.get("/api/sessions").await;
    assert_eq!(st, 200);
    assert_eq!(v["numberOfElements"], 0);
    assert_eq!(s.get("/config").await.0, 200);
}

#[tokio::test]
async fn limits_answer_503() {
    let s = start(|c| {
        c.sessions.max_sessions = 1;
        c.sessions.max_connections_per_session = 1;
    })
    .await;
    let sid = s.session(None).await;
    let (st, v) = s.post("/openvidu/api/sessions", json!({})).await;
    assert_eq!(st, 503, "{v}");
    s.connection(&sid, "PUBLISHER", "").await;
    let (st, _) = s.post(&format!("/openvidu/api/sessions/{sid}/connection"), json!({})).await;
    assert_eq!(st, 503);
}

#[tokio::test]
async fn unjoined_sessions_are_garbage_collected() {
    let s = start(|c| {
        c.sessions.garbage_interval = 1;
        c.sessions.garbage_threshold = 0;
    })
    .await;
    let sid = s.session(Some("ephemeral")).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if s.get(&format!("/openvidu/api/sessions/{sid}")).await.0 == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "session never collected");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ipcam_connection_is_active_with_a_stream() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (st, v) = s
        .post(
            &format!("/openvidu/api/sessions/{sid}/connection"),
            json!({"type": "IPCAM", "rtspUri": "rtsp://10.0.0.9:554/live", "data": "cam"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "active");
    assert_eq!(v["type"], "IPCAM");
    assert_eq!(v["role"], Value::Null);
    assert_eq!(v["platform"], "IPCAM");
    assert_eq!(v["adaptativeBitrate"], true);
    assert_eq!(v["networkCache"], 2000);
    let stream = v["publishers"][0]["streamId"].as_str().unwrap();
    assert!(stream.starts_with("str_IPC_"));
    let cid = v["connectionId"].as_str().unwrap();
    assert!(cid.starts_with("ipc_IPCAM_rtsp_") && cid.ends_with("_10_0_0_9_554_live"), "{cid}");
    assert!(stream.ends_with(&format!("_{cid}")));
    assert_eq!(v["publishers"][0]["mediaOptions"]["typeOfVideo"], "IPCAM");
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}/stream/{stream}")).await, 405);
}
