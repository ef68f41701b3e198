#!/usr/bin/env bash
# Drives the bridge's /v1 API with curl, as a Cognigy Flow's HTTP Request nodes would:
# start a handover, forward a user message, read the status. Then shows the three ways a
# request is refused (wrong key, oversize body, bad field).
#
#   BRIDGE_URL=http://127.0.0.1:8080 BRIDGE_KEY=... ENDPOINT_URL=http://127.0.0.1:8082 \
#   URL_TOKEN=sandbox-url-token docs/examples/curl-handover.sh
#
# It prints one line per step ("started: <id>", "message: 202", "status: <phase>", ...) and
# exits non-zero at the first answer it did not expect.
set -euo pipefail

: "${BRIDGE_URL:?set BRIDGE_URL to the base URL of the bridge}"
: "${BRIDGE_KEY:?set BRIDGE_KEY to an API key of the bridge}"
: "${ENDPOINT_URL:?set ENDPOINT_URL to the Cognigy Endpoint base URL}"
: "${URL_TOKEN:?set URL_TOKEN to the Endpoint URL token}"
USER_ID="${USER_ID:-curl-user-$$}"
SESSION_ID="${SESSION_ID:-curl-session-$$}"

body_file="$(mktemp)"
big_file="$(mktemp)"
trap 'rm -f "$body_file" "$big_file"' EXIT

# call METHOD PATH [BODY] [KEY] -> prints the status; the answer is in $body_file.
# A BODY of the form @FILE is read from FILE.
call() {
  local method="$1" path="$2" body="${3:-}" key="${4:-$BRIDGE_KEY}"
  local args=(-sS -o "$body_file" -w '%{http_code}' -X "$method" "$BRIDGE_URL$path"
              -H "Authorization: Bearer $key")
  if [[ -n "$body" ]]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$body")
  fi
  curl "${args[@]}"
}

expect() {
  local what="$1" want="$2" got="$3"
  if [[ "$got" != "$want" ]]; then
    echo "$what: expected $want, got $got: $(cat "$body_file")" >&2
    exit 1
  fi
}

field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$body_file"; }

status=$(call POST /v1/handovers "{
  \"requestId\": \"$SESSION_ID-1\",
  \"userId\": \"$USER_ID\", \"sessionId\": \"$SESSION_ID\",
  \"URLToken\": \"$URL_TOKEN\", \"endpointUrl\": \"$ENDPOINT_URL\",
  \"transcript\": [{\"role\": \"user\", \"text\": \"I was charged twice\"},
                   {\"role\": \"bot\", \"text\": \"Let me get you a person.\"}],
  \"settings\": {\"sendTranscript\": true, \"routingAttributes\": {\"issueType\": \"Billing\"}},
  \"locale\": \"en_US\"
}")
expect "start" 202 "$status"
handover=$(field handoverId)
echo "started: $handover"

status=$(call POST "/v1/handovers/$handover/messages" \
  '{"messageId": "curl-message-1", "text": "Hello from curl"}')
expect "message" 202 "$status"
echo "message: $status"

status=$(call GET "/v1/handovers/$handover")
expect "status" 200 "$status"
echo "status: $(field phase)"

status=$(call POST "/v1/handovers/$handover/messages" '{"messageId": "m", "text": "x"}' wrong-key-0123456789)
expect "wrong key" 401 "$status"
echo "wrong key: $status"

{ printf '{"messageId": "big", "text": "'; head -c 2000000 /dev/zero | tr '\0' 'x'; printf '"}'; } > "$big_file"
status=$(call POST "/v1/handovers/$handover/messages" "@$big_file")
expect "oversize" 413 "$status"
echo "oversize: $status"

status=$(call POST /v1/handovers '{"userId": "u", "sessionId": "s", "URLToken": "t", "endpointUrl": "https://e", "settings": {"sendTranscript": "yes"}}')
expect "bad field" 400 "$status"
echo "bad field: $status $(field field)"
