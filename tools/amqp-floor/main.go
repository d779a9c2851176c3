// amqp-floor: the consume+ack floor `make bench` compares the dispatcher with. A plain
// RabbitMQ consumer (rabbitmq/amqp091-go) that only acknowledges, with the dispatcher's prefetch
// and one `multiple` ack per half prefetch: as fast as the broker hands messages out. Prints the
// rate between the first and the last message and the CPU this process used, as JSON.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func main() {
	uri := flag.String("uri", "amqp://guest:guest@127.0.0.1:5672/%2f", "AMQP URI")
	queue := flag.String("queue", "", "queue to drain")
	n := flag.Int("n", 20000, "messages to consume")
	prefetch := flag.Int("prefetch", 64, "consumer prefetch")
	flag.Parse()
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "amqp-floor: %s: %v\n", what, err)
		os.Exit(1)
	}
	conn, err := amqp.Dial(*uri)
	if err != nil {
		fail("connect", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		fail("channel", err)
	}
	if err := ch.Qos(*prefetch, 0, false); err != nil {
		fail("qos", err)
	}
	deliveries, err := ch.Consume(*queue, "amqp-floor", false, false, false, false, nil)
	if err != nil {
		fail("consume", err)
	}
	every := *prefetch / 2
	if every < 1 {
		every = 1
	}
	cpuBefore := cpuSeconds()
	var first, last time.Time
	for i := 1; i <= *n; i++ {
		d, ok := <-deliveries
		if !ok {
			fail("consume", fmt.Errorf("the delivery channel closed after %d messages", i-1))
		}
		if i == 1 {
			first = time.Now()
		}
		if i%every == 0 || i == *n {
			if err := d.Ack(true); err != nil {
				fail("ack", err)
			}
		}
		last = time.Now()
	}
	rate := float64(*n-1) / last.Sub(first).Seconds()
	out, _ := json.Marshal(map[string]float64{"rate": rate, "cpu_seconds": cpuSeconds() - cpuBefore})
	fmt.Println(string(out))
}
