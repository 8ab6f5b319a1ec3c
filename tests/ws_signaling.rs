//! WebSocket JSON-RPC signaling over real loopback sockets (spec §3.3, §4).

mod common;

use std::time::Duration;

use common::{Ws, join_params, start, start_with_media};
use serde_json::{Value, json};

fn result(v: &Value) -> &Value {
    assert!(v.get("error").is_none(), "unexpected error: {v}");
    &v["result"]
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected error: {v}"))
}

#[tokio::test]
async fn join_result_and_participant_notifications() {
    let s = start(|_| {}).await;
    let sid = s.session(Some("room-1")).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "srvA").await;
    let (cb, tb) = s.connection(&sid, "SUBSCRIBER", "").await;

    let (mut a, ra) = s.join(&sid, &ta, "Ana").await;
    assert_eq!(ra["id"], ca);
    assert_eq!(ra["session"], sid);
    assert_eq!(ra["version"], "2.32.2");
    assert_eq!(ra["role"], "PUBLISHER");
    assert_eq!(ra["record"], true);
    assert_eq!(ra["mediaServer"], "kurento");
    assert_eq!(ra["value"], json!([]));
    assert_eq!(ra["metadata"], "{\"clientData\":\"Ana\"}%/%srvA");
    assert_eq!(ra["coturnIp"], "127.0.0.1");
    assert_eq!(ra["coturnPort"], 3478);
    let user = ra["turnUsername"].as_str().unwrap();
    assert!(user.ends_with(&format!(":{ca}")), "{user}");
    assert_eq!(ra["turnCredential"].as_str().unwrap().len(), 28);
    assert_eq!(ra["customIceServers"][0]["url"], "turn:127.0.0.1:3478");
    assert_eq!(ra["customIceServers"][0]["username"], user);
    let rpc_a = ra["sessionId"].as_str().unwrap().to_string();
    assert!(!rpc_a.is_empty());
    assert!(ra["createdAt"].as_u64().is_some());

    // The REST view is active now, with the IP and platform.
    let (_, c) = s.get(&format!("/openvidu/api/sessions/{sid}/connection/{ca}")).await;
    assert_eq!(c["status"], "active");
    assert_eq!(c["ip"], "127.0.0.1");
    assert_eq!(c["platform"], "Test 1.0");
    assert_eq!(c["clientData"], "{\"clientData\":\"Ana\"}");
    assert_eq!(c["location"], "unknown");
    assert_eq!(c["publishers"], json!([]));

    // A publishes (registry side, as the media code will), B joins and sees A's stream.
    let mut pp = serde_json::Map::new();
    pp.insert("hasAudio".into(), json!(true));
    pp.insert("hasVideo".into(), json!(true));
    pp.insert("typeOfVideo".into(), json!("CAMERA"));
    pp.insert("frameRate".into(), json!(30));
    pp.insert("videoDimensions".into(), json!("{\"width\":640,\"height\":480}"));
    let stream = s.control._add_stream_for_tests(&sid, &ca, &pp).unwrap();
    assert!(stream.starts_with("str_CAM_") && stream.ends_with(&format!("_{ca}")), "{stream}");

    let (mut b, rb) = s.join(&sid, &tb, "Ben").await;
    assert_eq!(rb["role"], "SUBSCRIBER");
    assert_eq!(rb["value"][0]["id"], ca);
    assert_eq!(rb["value"][0]["metadata"], "{\"clientData\":\"Ana\"}%/%srvA");
    assert_eq!(rb["value"][0]["streams"][0]["id"], stream);
    assert_eq!(rb["value"][0]["streams"][0]["videoDimensions"], "{\"width\":640,\"height\":480}");
    assert_eq!(rb["value"][0]["streams"][0]["filter"], json!({}));
    let pj = a.notification("participantJoined").await;
    assert_eq!(
        pj,
        json!({"id": cb, "createdAt": rb["createdAt"], "metadata": "{\"clientData\":\"Ben\"}"})
    );

    // streamPropertyChanged: the others get newValue re-encoded as JSON text.
    let r = a
        .call("streamPropertyChanged", Some(json!({"streamId": stream, "property": "audioActive", "newValue": false, "reason": "publishAudio"})))
        .await;
    assert_eq!(result(&r)["sessionId"], rpc_a);
    let n = b.notification("streamPropertyChanged").await;
    assert_eq!(n["newValue"], "false");
    assert_eq!(n["connectionId"], ca);
    a.call("streamPropertyChanged", Some(json!({"streamId": stream, "property": "videoDimensions", "newValue": "{\"width\":1,\"height\":2}", "reason": "screenResized"}))).await;
    let n = b.notification("streamPropertyChanged").await;
    assert_eq!(n["newValue"], "\"{\\\"width\\\":1,\\\"height\\\":2}\"");

    // videoData / echo answer {}.
    assert!(
        result(
            &a.call(
                "videoData",
                Some(json!({"height":480,"width":640,"videoActive":true,"audioActive":true}))
            )
            .await
        )
        .is_object()
    );
    assert!(result(&a.call("echo", Some(json!({}))).await).is_object());

    // B (subscriber) cannot publish through the registry.
    assert_eq!(s.control._add_stream_for_tests(&sid, &cb, &pp).unwrap_err().code, 401);

    // leaveRoom: A gets participantLeft {reason: disconnect}; B's response is {}.
    let r = b.call("leaveRoom", Some(json!({}))).await;
    assert!(result(&r).is_object());
    let left = a.notification("participantLeft").await;
    assert_eq!(left, json!({"connectionId": cb, "reason": "disconnect"}));
    // A leaves: session closed (last participant).
    a.call("leaveRoom", Some(json!({}))).await;
    assert_eq!(s.get(&format!("/openvidu/api/sessions/{sid}")).await.0, 404);
}

#[tokio::test]
async fn token_is_single_use_and_join_errors() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (_, tok) = s.connection(&sid, "PUBLISHER", "").await;
    let (_a, _) = s.join(&sid, &tok, "x").await;
    let mut b = Ws::open(&s.ws_url).await;
    let r = b.call("joinRoom", Some(join_params(&sid, &tok, "y"))).await;
    assert_eq!(error_code(&r), 401);
    assert!(r["error"]["message"].as_str().unwrap().contains("is not valid"));
    // Unknown session.
    let r = b.call("joinRoom", Some(join_params("nope", &tok, "y"))).await;
    assert_eq!(error_code(&r), 202);
    // Garbage token.
    let r =
        b.call("joinRoom", Some(join_params(&sid, "ws://x?sessionId=a&token=tok_Nope", "y"))).await;
    assert_eq!(error_code(&r), 401);
    // Missing params.
    let r = b.call("joinRoom", Some(json!({"session": sid}))).await;
    assert_eq!(error_code(&r), -32602);
    // A token of another session cannot join this one.
    let other = s.session(None).await;
    let (_, tok2) = s.connection(&other, "PUBLISHER", "").await;
    let r = b.call("joinRoom", Some(join_params(&sid, &tok2, "y"))).await;
    assert_eq!(error_code(&r), 401);
    // The bare tok_ value (exact-match fallback not needed, query match works for the URL).
    let (_, tok3) = s.connection(&sid, "PUBLISHER", "").await;
    let bare = tok3.rsplit("token=").next().unwrap().to_string();
    let r = b.call("joinRoom", Some(join_params(&sid, &bare, "y"))).await;
    assert!(r.get("result").is_some(), "{r}");
}

#[tokio::test]
async fn framing_errors_and_methods_before_join() {
    let s = start(|c| c.server.max_ws_message_bytes = 2048).await;
    let mut ws = Ws::open(&s.ws_url).await;
    // Ping without params; the pong carries no sessionId.
    let r = ws.call("ping", None).await;
    assert_eq!(r["result"], json!({"value": "pong"}));
    // Malformed JSON → parse error with id null.
    ws.send_text("{not json".into()).await;
    let r = ws.recv().await.unwrap();
    assert_eq!(r["error"]["code"], -32700);
    assert_eq!(r["id"], Value::Null);
    assert_eq!(r["jsonrpc"], "2.0");
    // Binary frames are ignored.
    use futures_util::SinkExt;
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    // Unknown method.
    let r = ws.call("fooBar", Some(json!({}))).await;
    assert_eq!(error_code(&r), -32601);
    // Methods needing a participant.
    for m in [
        "sendMessage",
        "leaveRoom",
        "forceDisconnect",
        "publishVideo",
        "onIceCandidate",
        "videoData",
    ] {
        let r = ws.call(m, Some(json!({}))).await;
        if m == "leaveRoom" {
            assert!(r.get("result").is_some());
        } else {
            assert_eq!(error_code(&r), 803, "{m}");
        }
    }
    // connect with an unknown JSON-RPC session.
    let r = ws.call("connect", Some(json!({"sessionId": "nope", "reconnect": true}))).await;
    assert_eq!(
        r["error"],
        json!({"code": 40007, "message": "reconnection error", "data": r["error"]["data"]})
    );
    assert_eq!(r["error"]["message"], "reconnection error");
    let r = ws.call("connect", None).await;
    assert_eq!(result(&r)["value"], "OK");
    // Still alive.
    assert_eq!(ws.call("ping", None).await["result"]["value"], "pong");
    // Oversized frame closes the socket.
    ws.send_text(format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":99,\"params\":{{\"x\":\"{}\"}}}}",
        "a".repeat(4096)
    ))
    .await;
    assert!(ws.closed_by_server().await);
    // The server keeps serving.
    let mut ws2 = Ws::open(&s.ws_url).await;
    assert_eq!(ws2.call("ping", None).await["result"]["value"], "pong");
}

#[tokio::test]
async fn media_methods_reach_the_dispatch_point() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, _) = s.join(&sid, &ta, "a").await;
    let r = a
        .call(
            "onIceCandidate",
            Some(json!({"endpointName": ca, "candidate": "", "sdpMid": "0", "sdpMLineIndex": 0})),
        )
        .await;
    assert!(result(&r).is_object());
    for m in [
        "publishVideo",
        "receiveVideoFrom",
        "prepareReceiveVideoFrom",
        "unpublishVideo",
        "unsubscribeFromVideo",
        "reconnectStream",
    ] {
        let r = a.call(m, Some(json!({}))).await;
        assert_eq!(error_code(&r), 999, "{m}");
    }
    let r = a
        .call(
            "applyFilter",
            Some(json!({"streamId": "x", "type": "GStreamerFilter", "options": "{}"})),
        )
        .await;
    assert_eq!(error_code(&r), 406);
    let r =
        a.call("subscribeToSpeechToText", Some(json!({"connectionId": ca, "lang": "en"}))).await;
    assert_eq!(error_code(&r), 997);
}

#[tokio::test]
async fn signals_via_rest_and_ws() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (cb, tb) = s.connection(&sid, "PUBLISHER", "").await;
    let (cc, tc) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, _) = s.join(&sid, &ta, "a").await;
    let (mut b, _) = s.join(&sid, &tb, "b").await;
    let (mut c, _) = s.join(&sid, &tc, "c").await;

    // REST to B only: no `from`.
    let r = s
        .req(reqwest::Method::POST, "/openvidu/api/signal")
        .json(&json!({"session": sid, "to": [cb], "type": "signal:chat", "data": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().is_empty());
    let n = b.notification("sendMessage").await;
    assert_eq!(n, json!({"data": "hello", "type": "signal:chat"}));
    // REST to everyone.
    assert_eq!(s.post("/openvidu/api/signal", json!({"session": sid, "data": "all"})).await.0, 200);
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws.notification("sendMessage").await["data"], "all");
    }
    // REST to an unknown connection → 406.
    assert_eq!(
        s.post("/openvidu/api/signal", json!({"session": sid, "to": ["con_Unknown"]})).await.0,
        406
    );

    // WS from A to C only.
    let msg = json!({"to": [cc], "data": "psst", "type": "signal:whisper"}).to_string();
    let r = a.call("sendMessage", Some(json!({"message": msg}))).await;
    assert!(result(&r).is_object());
    let n = c.notification("sendMessage").await;
    assert_eq!(n, json!({"data": "psst", "type": "signal:whisper", "from": ca}));
    // WS to everyone (to: []) includes the sender.
    let msg = json!({"to": [], "data": "hi", "type": "signal"}).to_string();
    a.call("sendMessage", Some(json!({"message": msg}))).await;
    for ws in [&mut a, &mut b, &mut c] {
        let n = ws.notification("sendMessage").await;
        assert_eq!(n["data"], "hi");
        assert_eq!(n["from"], ca);
    }
    // B must not have received the whisper.
    let rest = b.drain(Duration::from_millis(200)).await;
    assert!(rest.iter().all(|n| n["params"]["data"] != "psst"), "{rest:?}");
    // Errors: not JSON (600), bad `to` (601).
    let r = a.call("sendMessage", Some(json!({"message": "not json"}))).await;
    assert_eq!(error_code(&r), 600);
    let msg = json!({"to": [null], "data": "x"}).to_string();
    assert_eq!(error_code(&a.call("sendMessage", Some(json!({"message": msg}))).await), 601);
    let msg = json!({"to": ["con_Nobody"], "data": "x"}).to_string();
    assert_eq!(error_code(&a.call("sendMessage", Some(json!({"message": msg}))).await), 601);
}

#[tokio::test]
async fn force_disconnect_and_unpublish_need_moderator() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (_cm, tm) = s.connection(&sid, "MODERATOR", "").await;
    let (cp, tp) = s.connection(&sid, "PUBLISHER", "").await;
    let (co, to) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut m, _) = s.join(&sid, &tm, "m").await;
    let (mut p, _) = s.join(&sid, &tp, "p").await;
    let (mut o, _) = s.join(&sid, &to, "o").await;

    let stream = s
        .control
        ._add_stream_for_tests(
            &sid,
            &cp,
            json!({"hasAudio": true, "hasVideo": false}).as_object().unwrap(),
        )
        .unwrap();
    assert!(stream.starts_with("str_MIC_"));
    let pub_n = m.notification("participantPublished").await;
    assert_eq!(pub_n["id"], cp);
    assert_eq!(pub_n["streams"][0]["id"], stream);
    assert_eq!(pub_n["streams"][0]["hasVideo"], false);
    o.notification("participantPublished").await;

    // Publisher cannot force anything.
    assert_eq!(
        error_code(&p.call("forceDisconnect", Some(json!({"connectionId": co}))).await),
        401
    );
    assert_eq!(error_code(&p.call("forceUnpublish", Some(json!({"streamId": stream}))).await), 401);
    // Moderator: unknown targets.
    assert_eq!(
        error_code(&m.call("forceDisconnect", Some(json!({"connectionId": "con_X"}))).await),
        102
    );
    assert_eq!(
        error_code(&m.call("forceUnpublish", Some(json!({"streamId": "str_X"}))).await),
        105
    );
    // forceUnpublish: the publisher and the others get participantUnpublished.
    assert!(result(&m.call("forceUnpublish", Some(json!({"streamId": stream}))).await).is_object());
    let expect = json!({"connectionId": cp, "reason": "forceUnpublishByUser"});
    assert_eq!(p.notification("participantUnpublished").await, expect);
    assert_eq!(o.notification("participantUnpublished").await, expect);
    assert_eq!(m.notification("participantUnpublished").await, expect);

    // forceDisconnect: §4.8 fan-out.
    assert!(
        result(&m.call("forceDisconnect", Some(json!({"connectionId": co}))).await).is_object()
    );
    let ev = json!({"connectionId": co, "reason": "forceDisconnectByUser"});
    assert_eq!(o.notification("participantEvicted").await, ev);
    assert_eq!(p.notification("participantLeft").await, ev);
    assert_eq!(p.notification("participantEvicted").await, ev);
    assert_eq!(m.notification("participantLeft").await, ev);
    assert_eq!(m.notification("participantEvicted").await, ev);
    // The evicted one can no longer act.
    assert_eq!(error_code(&o.call("echo", Some(json!({}))).await), 803);

    // REST DELETE stream and DELETE connection.
    let stream = s
        .control
        ._add_stream_for_tests(
            &sid,
            &cp,
            json!({"hasVideo": true, "typeOfVideo": "SCREEN"}).as_object().unwrap(),
        )
        .unwrap();
    assert!(stream.starts_with("str_SCR_"));
    m.notification("participantPublished").await;
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}/stream/{stream}")).await, 204);
    let expect = json!({"connectionId": cp, "reason": "forceUnpublishByServer"});
    assert_eq!(p.notification("participantUnpublished").await, expect);
    assert_eq!(m.notification("participantUnpublished").await, expect);
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}/connection/{cp}")).await, 204);
    let ev = json!({"connectionId": cp, "reason": "forceDisconnectByServer"});
    assert_eq!(p.notification("participantEvicted").await, ev);
    assert_eq!(m.notification("participantLeft").await, ev);
    assert_eq!(m.notification("participantEvicted").await, ev);
}

#[tokio::test]
async fn delete_session_evicts_everyone() {
    let s = start(|c| c.server.reconnection_window = 0).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (cb, tb) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, pending_tok) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, _) = s.join(&sid, &ta, "a").await;
    let (mut b, _) = s.join(&sid, &tb, "b").await;
    a.notification("participantJoined").await;
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}")).await, 204);
    // Participants are evicted in join order: A first (only A's own participantEvicted reaches
    // A), then B (B sees A leave and be evicted, then its own eviction).
    let ev = |c: &str| json!({"connectionId": c, "reason": "sessionClosedByServer"});
    assert_eq!(a.notification("participantEvicted").await, ev(&ca));
    assert_eq!(b.notification("participantLeft").await, ev(&ca));
    assert_eq!(b.notification("participantEvicted").await, ev(&ca));
    assert_eq!(b.notification("participantEvicted").await, ev(&cb));
    assert_eq!(s.get(&format!("/openvidu/api/sessions/{sid}")).await.0, 404);
    // Pending tokens died with the session.
    let mut c = Ws::open(&s.ws_url).await;
    let r = c.call("joinRoom", Some(join_params(&sid, &pending_tok, "c"))).await;
    assert_eq!(error_code(&r), 202);
    // The server closes the evicted sockets (window 0).
    assert!(a.closed_by_server().await);
}

#[tokio::test]
async fn ping_watchdog_evicts_a_silent_participant() {
    let s = start(|c| {
        c.server.ping_timeout = 1;
        c.server.reconnection_window = 0;
    })
    .await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (_cb, tb) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, _) = s.join(&sid, &ta, "a").await;
    let (mut b, _) = s.join(&sid, &tb, "b").await;
    // B keeps pinging; A stays silent.
    let keep = async {
        loop {
            let left = tokio::select! {
                n = b.notification("participantLeft") => Some(n),
                _ = tokio::time::sleep(Duration::from_millis(300)) => None,
            };
            if let Some(n) = left {
                return n;
            }
            let r = b.call("ping", None).await;
            assert_eq!(r["result"]["value"], "pong");
        }
    };
    let left = tokio::time::timeout(common::WAIT, keep).await.expect("participantLeft in time");
    assert_eq!(left, json!({"connectionId": ca, "reason": "networkDisconnect"}));
    assert!(a.closed_by_server().await);
}

#[tokio::test]
async fn reconnect_with_connect_keeps_the_participant() {
    let s = start(|c| c.server.reconnection_window = 30).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tb) = s.connection(&sid, "PUBLISHER", "").await;
    let (a, ra) = s.join(&sid, &ta, "a").await;
    let (mut b, _) = s.join(&sid, &tb, "b").await;
    let rpc = ra["sessionId"].as_str().unwrap().to_string();
    drop(a); // abrupt close
    let mut a2 = Ws::open(&format!("{}?sessionId={sid}&reconnect=true", s.ws_url)).await;
    let r = a2.call("connect", Some(json!({"sessionId": rpc, "reconnect": true}))).await;
    assert_eq!(result(&r)["value"], "reconnection successful");
    assert_eq!(result(&r)["sessionId"], rpc);
    // Notifications now reach the new socket.
    let msg = json!({"to": [ca], "data": "back?", "type": "signal"}).to_string();
    b.call("sendMessage", Some(json!({"message": msg}))).await;
    assert_eq!(a2.notification("sendMessage").await["data"], "back?");
    // And A acts as itself.
    let r = a2.call("echo", Some(json!({}))).await;
    assert_eq!(result(&r)["sessionId"], rpc);
}

#[tokio::test]
async fn patch_pushes_connection_property_changed() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, _) = s.join(&sid, &ta, "a").await;
    let r = s
        .req(reqwest::Method::PATCH, &format!("/openvidu/api/sessions/{sid}/connection/{ca}"))
        .json(&json!({"role": "MODERATOR", "record": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        a.notification("connectionPropertyChanged").await,
        json!({"property": "role", "newValue": "MODERATOR"})
    );
    assert_eq!(
        a.notification("connectionPropertyChanged").await,
        json!({"property": "record", "newValue": "false"})
    );
    // The new role is enforced at once.
    let r = a.call("forceDisconnect", Some(json!({"connectionId": "con_X"}))).await;
    assert_eq!(error_code(&r), 102);
}

#[tokio::test]
async fn websocket_connection_limit() {
    let s = start(|c| c.server.max_ws_connections = 1).await;
    let _a = Ws::open(&s.ws_url).await;
    match tokio_tungstenite::connect_async(s.ws_url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn shutdown_evicts_everyone() {
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, _) = s.join(&sid, &ta, "a").await;
    s.control.shutdown().await;
    assert_eq!(
        a.notification("participantEvicted").await,
        json!({"connectionId": ca, "reason": "openviduServerStopped"})
    );
    assert!(a.closed_by_server().await);
    assert_eq!(s.post("/openvidu/api/sessions", json!({})).await.0, 503);
}

#[tokio::test]
async fn floods_and_garbage_do_not_break_the_server() {
    let s = start(|_| {}).await;
    let mut ws = Ws::open(&s.ws_url).await;
    let garbage = [
        "",
        "null",
        "[]",
        "42",
        "{}",
        "{\"id\":{}}",
        "{\"method\":5,\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"joinRoom\",\"id\":2,\"params\":[1]}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"joinRoom\",\"id\":3,\"params\":{\"token\":5,\"session\":[]}}",
        "{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":4}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sendMessage\"}",
    ];
    for g in garbage {
        ws.send_text(g.to_string()).await;
    }
    for _ in 0..300 {
        ws.send_text(json!({"jsonrpc":"2.0","method":"ping","id":1000}).to_string()).await;
    }
    assert_eq!(ws.call("ping", None).await["result"]["value"], "pong");
}

#[tokio::test]
async fn client_ip_comes_from_x_real_ip() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = start(|_| {}).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let mut req = s.ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("X-Real-IP", "203.0.113.7".parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut ws = Ws::from_stream(stream);
    let r = ws.call("joinRoom", Some(join_params(&sid, &ta, "a"))).await;
    assert!(r.get("result").is_some(), "{r}");
    let (_, c) = s.get(&format!("/openvidu/api/sessions/{sid}/connection/{ca}")).await;
    assert_eq!(c["ip"], "203.0.113.7");
}

#[tokio::test]
async fn closed_socket_is_evicted_after_the_window() {
    let s = start(|c| c.server.reconnection_window = 0).await;
    let sid = s.session(None).await;
    let (ca, ta) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tb) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, ra) = s.join(&sid, &ta, "a").await;
    let (mut b, _) = s.join(&sid, &tb, "b").await;
    let rpc = ra["sessionId"].as_str().unwrap().to_string();
    a.stream.close(None).await.unwrap();
    let ev = json!({"connectionId": ca, "reason": "networkDisconnect"});
    assert_eq!(b.notification("participantLeft").await, ev);
    assert_eq!(b.notification("participantEvicted").await, ev);
    let mut a2 = Ws::open(&s.ws_url).await;
    let r = a2.call("connect", Some(json!({"sessionId": rpc, "reconnect": true}))).await;
    assert_eq!(error_code(&r), 40007);
    assert_eq!(r["error"]["message"], "reconnection error");
}

/// `[media] simulcast`: joinRoom says "mediasoup" (openvidu-browser sends simulcast and
/// subscribes with server offers only then) and `videoSimulcast: true`; /config agrees. Off
/// (the default, checked above) it says "kurento" and false.
#[tokio::test]
async fn join_result_advertises_simulcast_only_when_it_is_on() {
    for on in [false, true] {
        let s = start_with_media(|c| {
            c.media.simulcast = on;
            c.media.shards = 1;
        })
        .await;
        let sid = s.session(None).await;
        let (_, tok) = s.connection(&sid, "PUBLISHER", "").await;
        let (_ws, r) = s.join(&sid, &tok, "Ana").await;
        assert_eq!(r["mediaServer"], if on { "mediasoup" } else { "kurento" }, "{r}");
        assert_eq!(r["videoSimulcast"], on, "{r}");
        let (_, cfg) = s.get("/openvidu/api/config").await;
        assert_eq!(cfg["OPENVIDU_WEBRTC_SIMULCAST"], on, "{cfg}");
    }
}
