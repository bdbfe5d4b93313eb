#!/bin/sh
# One-shot (compose service `mqtt-setup`): the collectors' MQTT account in Mosquitto's dynamic security,
# allowed to subscribe to every device topic, also as a member of the shared subscription `$share/nakhon/...`
# (the same ACLs as gateway/broker/dynsec.py `ensure_collector_account`). Idempotent: "already exists" is fine.
set -u
: "${MQTT_ADMIN_USERNAME:?}" "${MQTT_ADMIN_PASSWORD:?}" "${COLLECTORS_MQTT_PASSWORD:?}"
ctrl() { mosquitto_ctrl -h "${MQTT_HOST:-broker}" -u "$MQTT_ADMIN_USERNAME" -P "$MQTT_ADMIN_PASSWORD" dynsec "$@"; }
ctrl createRole collectors || true  # role name as gateway/broker/dynsec.py COLLECTORS_ROLE
for filter in 'city/#' 'v3/#' 'application/#'; do
    ctrl addRoleACL collectors subscribePattern "$filter" allow 0 || true
    ctrl addRoleACL collectors subscribePattern "\$share/nakhon/$filter" allow 0 || true
    ctrl addRoleACL collectors publishClientReceive "$filter" allow 0 || true
done
ctrl createClient collectors -p "$COLLECTORS_MQTT_PASSWORD" || ctrl setClientPassword collectors "$COLLECTORS_MQTT_PASSWORD"
ctrl addClientRole collectors collectors 0 || true
echo "collectors account ready"
