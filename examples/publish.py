"""Publish a message to a client's queue with pika (pip install pika).

    python3 examples/publish.py demo 'Hello, browser'

The queue is declared as eventsourced declares it (durable, x-expires as a 32-bit integer in
milliseconds), so a message published before the client's first connection waits for it.
"""
import sys

import pika

queue, message = sys.argv[1], sys.argv[2]
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))
channel = connection.channel()
channel.confirm_delivery()
channel.queue_declare(queue, durable=True, arguments={"x-expires": 1800 * 1000})
channel.basic_publish(
    exchange="",
    routing_key=queue,
    body=message.encode(),
    properties=pika.BasicProperties(delivery_mode=2),
)
connection.close()
print(f"published to {queue}")
