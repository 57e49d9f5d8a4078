#!/bin/sh
# The rabbitmq container's entrypoint: render the definitions file (a JSON document the
# broker imports at boot, see 20-loanfolio.conf) from the passwords in compose/.env, then
# start RabbitMQ exactly as the image would. The passwords stay out of the repository: only
# this template is committed.
#
#   vhost `loanfolio`   everything the service declares (rabbitmq.prefix = "loanfolio")
#   user `loanfolio`    the service (rabbitmq.url); full rights in that vhost only
#   user `admin`        the management UI (http://127.0.0.1:15672); administrator
set -eu

: "${RABBITMQ_APP_PASSWORD:?set it in compose/.env}" "${RABBITMQ_ADMIN_PASSWORD:?set it in compose/.env}"

# A JSON string literal's contents: backslashes and double quotes escaped.
json_string() {
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

definitions=/tmp/loanfolio-definitions.json
umask 077
cat >"$definitions" <<JSON
{
  "vhosts": [{"name": "loanfolio"}],
  "users": [
    {"name": "loanfolio", "password": "$(json_string "$RABBITMQ_APP_PASSWORD")", "tags": []},
    {"name": "admin", "password": "$(json_string "$RABBITMQ_ADMIN_PASSWORD")", "tags": ["administrator"]}
  ],
  "permissions": [
    {"user": "loanfolio", "vhost": "loanfolio", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "admin", "vhost": "loanfolio", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
JSON
# The image's entrypoint starts the server as the rabbitmq user.
if [ "$(id -u)" = 0 ]; then
    chown rabbitmq:rabbitmq "$definitions"
fi

exec docker-entrypoint.sh rabbitmq-server
