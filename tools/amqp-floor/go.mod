// The bench's consume+ack floor (make bench builds it into target/). Not part of the product.
module sluice.dev/tools/amqp-floor

go 1.26

require github.com/rabbitmq/amqp091-go v1.17.0
