package monitor

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollectorServesTheSnapshot(t *testing.T) {
	tr := NewTracker(0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(tr))
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("before the first sample: %v %v", mfs, err)
	}
	lim := tr.Limits(nil, nil)
	for i := range 2 {
		now := t0.Add(time.Duration(i) * time.Second)
		tr.Observe(now, &ProcSample{Memory: 1 << 20}, []Reading{
			{Task: "E", Where: External, Pid: 1, Running: true, Proc: &ProcSample{FDs: 120}, Limits: lim, Held: "failsafe"},
			{Task: "I", Where: Internal, Pid: 2, Running: true, Limits: lim, Counters: &Counters{At: now, In: 4}},
			{Task: "H", Held: "retries"},
		})
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got = append(got, mf.GetName()+"{"+strings.Join(labels, ",")+"} "+prometheusValue(v))
		}
	}
	for _, want := range []string{
		"multimodule_last_sample_timestamp_seconds{} 1704067201",
		"multimodule_daemon_memory_bytes{} 1048576",
		"multimodule_task_up{task=E,where=external} 1",
		"multimodule_task_up{task=I,where=internal} 1",
		"multimodule_task_held{reason=failsafe,task=E} 1",
		"multimodule_task_held{reason=retries,task=H} 1",
		"multimodule_task_open_fds{task=E,where=external} 120",
		"multimodule_task_level{metric=fds,task=E} 1",
		"multimodule_task_messages_in_per_second{task=I,where=internal} 0",
		"multimodule_task_messages_in_total{task=I,where=internal} 4",
		"multimodule_task_messages_out_total{task=I,where=internal} 0",
		"multimodule_task_failures_total{task=I,where=internal} 0",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("no %s in\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, g := range got {
		if strings.Contains(g, "task=H") && !strings.HasPrefix(g, "multimodule_task_held{") {
			t.Errorf("a held task that does not run has %s", g)
		}
	}
}

func prometheusValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
