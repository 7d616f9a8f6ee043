package statestore

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

type bboltTx = bolt.Tx

var s0time = time.Unix(1700000000, 0)
