#!/bin/sh
# Publish a message to a client's queue with Debian's amqp-tools (apt-get install amqp-tools).
# The queue must exist: the client's first connection declares it (or `eventsourced publish`).
#   examples/publish.sh demo 'Hello, browser'
queue=${1:?usage: publish.sh QUEUE MESSAGE}
message=${2:?usage: publish.sh QUEUE MESSAGE}
exec amqp-publish --url="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}" \
  --routing-key="$queue" --persistent --body="$message"
