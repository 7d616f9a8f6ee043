package transit

// RemoveKernelQueueForTest removes the kernel queue but not its name.
func RemoveKernelQueueForTest(q *Queue) error { return msgrmid(q.qid()) }
