//! MQTT 3.1.1 client, QoS 0 and 1; on the simulated network by default.
//! `cargo run --example mqttclient -- --help`
#[path = "common/mod.rs"]
mod common;
#[path = "peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "apps/mqttclient.rs"]
mod mqttclient;

fn main() {
    peers_ws_mqtt::text::main(&mqttclient::SPEC, mqttclient::run, mqttclient::TEXT)
}
