package app

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Kind is the type of a setting's value. The flag has that type (`agent serve --help`
// shows it), and a value of the wrong type is refused when it is set, from the command
// line or from the environment, naming both.
type Kind int

const (
	// KindString is any text (addresses, names, URLs, JSON).
	KindString Kind = iota
	// KindBool is true or false (also 1/0, t/f); the flag alone means true.
	KindBool
	// KindInt is a whole number >= 0.
	KindInt
	// KindDuration is a Go duration >= 0 such as 30m or 2h; empty and "0" mean 0.
	KindDuration
	// KindQuantity is a Kubernetes resource quantity such as 500m or 2Gi; empty means none.
	KindQuantity
	// KindList is comma-separated, each item trimmed and empty ones dropped.
	KindList
	// KindUSD is an amount of US dollars >= 0 such as 25 or 2.50; empty and "0" mean 0.
	KindUSD
)

// typeName is what --help shows after the flag.
func (k Kind) typeName() string {
	switch k {
	case KindBool:
		return "bool"
	case KindInt:
		return "int"
	case KindDuration:
		return "duration"
	case KindQuantity:
		return "quantity"
	case KindList:
		return "strings"
	case KindUSD:
		return "usd"
	}
	return "string"
}

// value is one setting's pflag.Value: Set parses by kind, so a bad value fails where it
// is given; text keeps the value as given for String and Quantity settings.
type value struct {
	opt  Option
	text string
	b    bool
	n    int
	d    time.Duration
	list []string
	usd  float64
}

func (v *value) String() string {
	switch v.opt.Kind {
	case KindBool:
		return strconv.FormatBool(v.b)
	case KindInt:
		return strconv.Itoa(v.n)
	case KindDuration:
		return v.d.String()
	case KindList:
		return strings.Join(v.list, ",")
	case KindUSD:
		return strconv.FormatFloat(v.usd, 'f', -1, 64)
	}
	return v.text
}

// Type is the type name pflag shows in --help ("bool" shows none: the flag alone is true).
func (v *value) Type() string { return v.opt.Kind.typeName() }

// IsBoolFlag lets pflag treat Bool settings as switches.
func (v *value) IsBoolFlag() bool { return v.opt.Kind == KindBool }

// Set parses s by kind. Errors say what is wanted and name the environment variable, as
// pflag names the flag around them.
func (v *value) Set(s string) error {
	if err := v.set(s); err != nil {
		return fmt.Errorf("%v [$%s]", err, v.opt.Env)
	}
	return nil
}

func (v *value) set(s string) error {
	t := strings.TrimSpace(s)
	switch v.opt.Kind {
	case KindBool:
		if t == "" {
			v.b = false
			return nil
		}
		b, err := strconv.ParseBool(t)
		if err != nil {
			return errors.New("want true or false")
		}
		v.b = b
	case KindInt:
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return errors.New("want a whole number >= 0")
		}
		v.n = n
	case KindDuration:
		if t == "" || t == "0" {
			v.d = 0
			return nil
		}
		d, err := time.ParseDuration(t)
		if err != nil || d < 0 {
			return errors.New("want a duration such as 30m or 2h")
		}
		v.d = d
	case KindQuantity:
		if t != "" {
			if _, err := resource.ParseQuantity(t); err != nil {
				return errors.New("want a quantity such as 500m, 2 or 2Gi")
			}
		}
		v.text = t
	case KindList:
		v.list = list(t)
	case KindUSD:
		if t == "" {
			v.usd = 0
			return nil
		}
		f, err := strconv.ParseFloat(strings.TrimPrefix(t, "$"), 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return errors.New("want an amount of US dollars >= 0 such as 25 or 2.50")
		}
		v.usd = f
	default:
		// Secrets are kept as given; everything else trimmed.
		if v.opt.Secret {
			v.text = s
		} else {
			v.text = t
		}
	}
	return nil
}
