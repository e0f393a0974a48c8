package backendtest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/wire"
)

type executeRequest struct {
	Code            string            `json:"code"`
	Silent          bool              `json:"silent"`
	StoreHistory    *bool             `json:"store_history"`
	UserExpressions map[string]string `json:"user_expressions"`
	AllowStdin      *bool             `json:"allow_stdin"`
}

// execute runs an execute_request as ipykernel does: execute_input, the
// cell's outputs, an error or the execute_result, then the reply with the
// user_expressions evaluated (none when the cell raised).
func (inc *incarnation) execute(o *out) error {
	var req executeRequest
	if err := o.req.Decode(&req); err != nil {
		inc.mu.Lock()
		c := errContent("ValueError", err.Error())
		c["execution_count"], c["user_expressions"] = inc.count, map[string]any{}
		inc.mu.Unlock()
		o.add(wire.Shell, "execute_reply", c, nil)
		return nil
	}
	inc.k.mu.Lock()
	aborted := inc.k.abort[req.Code]
	delete(inc.k.abort, req.Code)
	if !aborted {
		inc.k.executed[req.Code]++
	}
	inc.k.mu.Unlock()
	if aborted {
		o.add(wire.Shell, "execute_reply", map[string]any{"status": "aborted"}, nil)
		return nil
	}
	store := !req.Silent && (req.StoreHistory == nil || *req.StoreHistory) && !isBlank(req.Code)
	inc.mu.Lock()
	num := inc.count + 1
	inc.mu.Unlock()
	if !req.Silent {
		o.iopub("execute_input", map[string]any{"code": req.Code, "execution_count": num})
	}
	select { // an interrupt meant for an earlier cell
	case <-inc.intr:
	default:
	}
	inc.running.Store(true)
	x := &executor{inc: inc, o: o, allowStdin: req.AllowStdin == nil || *req.AllowStdin, silent: req.Silent}
	if !req.Silent {
		inc.mu.Lock()
		inc.cellEffects = nil
		inc.mu.Unlock()
	}
	var result *object
	var err error
	if isInstall(req.Code) {
		inc.mu.Lock()
		err = inc.install(req.Code)
		inc.mu.Unlock()
	} else {
		result, err = x.run(req.Code)
	}
	inc.running.Store(false)
	if errors.Is(err, errDead) {
		return err
	}
	inc.mu.Lock()
	defer inc.mu.Unlock()
	if store {
		inc.count = num
	}
	reply := map[string]any{"status": "ok", "execution_count": inc.count, "payload": []any{}}
	var pe *pyError
	if errors.As(err, &pe) {
		tb := []string{"Traceback (most recent call last):", fmt.Sprintf("  Cell In[%d], line %d", num, pe.line), pe.ename + ": " + pe.evalue}
		o.iopub("error", map[string]any{"ename": pe.ename, "evalue": pe.evalue, "traceback": tb})
		reply["status"], reply["ename"], reply["evalue"], reply["traceback"] = "error", pe.ename, pe.evalue, tb
		reply["user_expressions"] = map[string]any{} // as ipykernel: none after an error
	} else {
		if result != nil && result != none && !req.Silent {
			o.iopub("execute_result", map[string]any{"execution_count": num, "data": map[string]string{"text/plain": repr(result)}, "metadata": map[string]any{}})
		}
		reply["user_expressions"] = inc.userExpressions(req.UserExpressions)
	}
	o.add(wire.Shell, "execute_reply", reply, nil)
	return nil
}

// isBlank is IPython's test for a cell it neither runs nor counts.
func isBlank(code string) bool {
	return strings.TrimFunc(code, unicode.IsSpace) == ""
}

// executor runs one cell's statements; it is the interpreter's env.
type executor struct {
	inc        *incarnation
	o          *out
	allowStdin bool
	silent     bool // Ferry's hidden work: its effects are not the user's cell's
}

// run executes code statement by statement, delivering output as it
// comes; it returns the last statement's value if that is an expression.
func (x *executor) run(code string) (*object, error) {
	stmts, err := parse(code)
	if err != nil {
		return nil, err
	}
	var last *object
	for i, s := range stmts {
		select {
		case <-x.inc.intr:
			return nil, &pyError{ename: "KeyboardInterrupt", line: s.line}
		default:
		}
		x.inc.mu.Lock()
		v, err := x.stmt(s)
		x.inc.mu.Unlock()
		if ferr := x.o.flush(); ferr != nil {
			return nil, ferr
		}
		if err != nil {
			if pe, ok := err.(*pyError); ok && pe.line == 0 {
				pe.line = s.line
			}
			return nil, err
		}
		if i == len(stmts)-1 && s.op == "expr" {
			last = v
		}
	}
	return last, nil
}

// stmt runs one statement, with the incarnation's lock held.
func (x *executor) stmt(s stmt) (*object, error) {
	ns := x.inc.ns
	switch s.op {
	case "assign":
		v, err := eval(x, s.x)
		if err != nil {
			return nil, err
		}
		ns[s.target] = v
	case "setitem":
		v, err := eval(x, s.x)
		if err != nil {
			return nil, err
		}
		l, i, err := item(x, indexExpr{recv: s.target, index: s.index})
		if err != nil {
			return nil, err
		}
		l.items[i] = v
	case "del":
		for _, n := range s.names {
			if _, ok := ns[n]; !ok {
				return nil, raise("NameError", "name '%s' is not defined", n)
			}
			delete(ns, n)
		}
	case "raise":
		e := &pyError{ename: s.target}
		if s.x != nil {
			v, err := eval(x, s.x)
			if err != nil {
				return nil, err
			}
			e.evalue = str(v)
		}
		return nil, e
	case "expr":
		return eval(x, s.x)
	}
	return none, nil
}

func (x *executor) lookup(name string) (*object, bool) {
	o, ok := x.inc.ns[name]
	return o, ok
}

func (x *executor) print(text string) {
	x.o.iopub("stream", map[string]string{"name": "stdout", "text": text})
}

func (x *executor) effect(name string) {
	x.inc.k.mu.Lock()
	x.inc.k.effects[name]++
	x.inc.k.mu.Unlock()
	if !x.silent {
		x.inc.cellEffects = append(x.inc.cellEffects, "effect "+name) // x.inc.mu is held while a cell runs
	}
}

// wait releases the namespace and delivers the output so far while a
// builtin blocks, as Python releases the GIL in time.sleep.
func (x *executor) wait(f func() error) error {
	x.inc.mu.Unlock()
	defer x.inc.mu.Lock()
	if err := x.o.flush(); err != nil {
		return err
	}
	return f()
}

func (x *executor) sleep(seconds float64) error {
	if seconds < 0 {
		return raise("ValueError", "sleep length must be non-negative")
	}
	return x.wait(func() error {
		t := time.NewTimer(time.Duration(seconds * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-x.inc.intr:
			return &pyError{ename: "KeyboardInterrupt"}
		case <-x.inc.dead:
			return errDead
		}
	})
}

func (x *executor) input(prompt string) (string, error) {
	if !x.allowStdin {
		return "", raise("StdinNotImplementedError", "raw_input was called, but this frontend does not support input requests.")
	}
	var value string
	err := x.wait(func() error {
		for len(x.inc.stdin) > 0 { // a stray reply from before
			<-x.inc.stdin
		}
		req := x.inc.msg("input_request", x.o.req, map[string]any{"prompt": prompt, "password": false}, nil)
		if err := x.inc.emit(wire.Stdin, req); err != nil {
			return err
		}
		for {
			select {
			case r := <-x.inc.stdin:
				if p := r.ParentID(); r.Header.MsgType != "input_reply" || p != "" && p != req.Header.MsgID {
					continue
				}
				var c struct {
					Value string `json:"value"`
				}
				if err := r.Decode(&c); err != nil {
					return raise("ValueError", "%v", err)
				}
				value = c.Value
				return nil
			case <-x.inc.intr:
				return &pyError{ename: "KeyboardInterrupt"}
			case <-x.inc.dead:
				return errDead
			}
		}
	})
	return value, err
}

// ---------------------------------------------------------------- user expressions

// exprEnv evaluates user_expressions: names only, no side effects.
type exprEnv struct{ inc *incarnation }

func (e exprEnv) lookup(name string) (*object, bool) { o, ok := e.inc.ns[name]; return o, ok }
func (exprEnv) print(string)                         {}
func (exprEnv) effect(string)                        {}
func (exprEnv) sleep(float64) error {
	return raise("ValueError", "the fake kernel runs no sleep() in user_expressions")
}
func (exprEnv) input(string) (string, error) {
	return "", raise("StdinNotImplementedError", "no input in user_expressions")
}

// userExpressions evaluates each expression to a mime bundle, with the
// incarnation's lock held: the agent's report, its protocol version and
// dump size, or an expression of the subset.
func (inc *incarnation) userExpressions(exprs map[string]string) map[string]any {
	outs := make(map[string]any, len(exprs))
	for key, src := range exprs {
		text, err := inc.evalExpression(src)
		if err != nil {
			var pe *pyError
			if !errors.As(err, &pe) {
				pe = &pyError{ename: "Exception", evalue: err.Error()}
			}
			outs[key] = map[string]any{"status": "error", "ename": pe.ename, "evalue": pe.evalue, "traceback": []string{}}
			continue
		}
		outs[key] = map[string]any{"status": "ok", "data": map[string]string{"text/plain": text}, "metadata": map[string]any{}}
	}
	return outs
}

const reportPrefix = `__import__("_ferry_agent").report(`

func (inc *incarnation) evalExpression(src string) (string, error) {
	s := strings.TrimSpace(src)
	if strings.Contains(s, "_ferry_agent") {
		if !inc.agent.installed {
			return "", raise("ModuleNotFoundError", "No module named '_ferry_agent'")
		}
		switch {
		case s == agent.ProtocolExpr:
			return strconv.Itoa(agent.ProtocolVersion), nil
		case s == agent.InfoExpr:
			// A fake kernel has no disk, modules or environment to tell of.
			return `{"python":"3.fake","pickle":5,"modules":{},"env":[],"root":"","files":{},"truncated":false,"user":"fake"}`, nil
		case s == agent.DumpSessionExpr:
			return inc.dumpSize(), nil
		case strings.HasPrefix(s, reportPrefix) && strings.HasSuffix(s, ")"):
			maybe, dynamic, err := parseReportArgs(s[len(reportPrefix) : len(s)-1])
			if err != nil {
				return "", err
			}
			return inc.report(maybe, dynamic), nil
		}
		return "", raise("AttributeError", "the fake agent does not know %.80q", s)
	}
	toks, err := lex(s)
	if err != nil {
		return "", raise("SyntaxError", "%v", err)
	}
	p := &parser{toks: toks}
	x, err := p.expr()
	if err == nil && p.pos != len(toks) {
		err = fmt.Errorf("unexpected %q", p.peek().text)
	}
	if err != nil {
		return "", raise("SyntaxError", "%v", err)
	}
	v, err := eval(exprEnv{inc}, x)
	if err != nil {
		return "", err
	}
	return repr(v), nil
}
