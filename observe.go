package apcore

// observer is one function that sees every transition of this manager's
// tasks: WithObserver's, or one added by Subscribe.
type observer struct{ fn func(TaskInfo) }

// Subscribe adds fn to the functions called with a copy of the record after
// every transition this manager makes and every progress report of its
// tasks, as WithObserver's function is (see WithObserver for the rules: in
// order per task, on the goroutine making the transition, and fn must
// return quickly). It returns a function that removes fn again; once that
// has returned, no new call of fn starts (one already under way may
// finish). Integrations such as apcoreotel and
// apcorehttp use it; a nil fn is GENERAL_INVALID_INPUT.
func (m *TaskManager) Subscribe(fn func(TaskInfo)) (cancel func(), err error) {
	if fn == nil {
		return nil, invalidf("Subscribe: the function is nil")
	}
	o := &observer{fn: fn}
	m.obsMu.Lock()
	defer m.obsMu.Unlock()
	var next []*observer
	if cur := m.observers.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, o)
	m.observers.Store(&next)
	return func() { m.unsubscribe(o) }, nil
}

// unsubscribe removes o from the observers.
func (m *TaskManager) unsubscribe(o *observer) {
	m.obsMu.Lock()
	defer m.obsMu.Unlock()
	cur := m.observers.Load()
	if cur == nil {
		return
	}
	var next []*observer
	for _, x := range *cur {
		if x != o {
			next = append(next, x)
		}
	}
	if len(next) == 0 {
		m.observers.Store(nil)
		return
	}
	m.observers.Store(&next)
}

// notify hands a copy of info to each observer, if there are any. It is
// small enough to inline, so that a manager without observers pays no frame
// for the copies (see settle on worker stacks).
func (m *TaskManager) notify(info *TaskInfo) {
	if obs := m.observers.Load(); obs != nil {
		announce(*obs, info)
	}
}

// announce calls each observer with a copy of info.
func announce(obs []*observer, info *TaskInfo) {
	for _, o := range obs {
		o.fn(info.clone())
	}
}
