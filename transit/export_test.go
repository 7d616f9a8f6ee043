package transit

// SendRawForTest queues text as-is, as a foreign program could.
func SendRawForTest(q *Queue, text []byte) error {
	return q.sendWait(append(header(nil), text...))
}

// RemoveKernelQueueForTest removes the kernel queue but not its name.
func RemoveKernelQueueForTest(q *Queue) error { return msgrmid(q.qid()) }
