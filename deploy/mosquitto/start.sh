#!/bin/sh
# Start Mosquitto in the eclipse-mosquitto:2 image with nakhon's production config (deploy/mosquitto/mosquitto.conf).
# - that config names Debian's plugin path; the Alpine image keeps the plugin in /usr/lib: link it there;
# - on first start, create the dynamic-security file with the gateway's admin account (no anonymous access,
#   no other account: devices and the collectors' account are created through dynamic security).
set -eu
: "${MQTT_ADMIN_USERNAME:?}" "${MQTT_ADMIN_PASSWORD:?}"
if [ ! -e /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so ]; then
    mkdir -p /usr/lib/x86_64-linux-gnu
    ln -s /usr/lib/mosquitto_dynamic_security.so /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
fi
mkdir -p /var/lib/mosquitto
if [ ! -f /var/lib/mosquitto/dynamic-security.json ]; then
    mosquitto_ctrl dynsec init /var/lib/mosquitto/dynamic-security.json "$MQTT_ADMIN_USERNAME" "$MQTT_ADMIN_PASSWORD"
fi
chown -R mosquitto:mosquitto /var/lib/mosquitto
exec mosquitto -c /mosquitto/config/mosquitto.conf
