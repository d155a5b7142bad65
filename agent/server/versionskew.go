package server

import (
	"net/http"

	"github.com/cakeai/cake-agents/pkg/version"
)

// versionSkew answers every request with the agent's version and, when the client said
// its own (the plugin does, version.HeaderClient) and the two are outside the supported
// window, with a Warning header of one line saying which to upgrade; the plugin prints it
// once. The first request of each such client version is logged, so operators see old
// plugins in use.
func (s *Server) versionSkew(next http.Handler) http.Handler {
	agent := s.version()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(version.HeaderAgent, agent)
		if client := r.Header.Get(version.HeaderClient); client != "" {
			if text := version.Skew(client, agent); text != "" {
				w.Header().Add("Warning", version.WarningHeader(text))
				if s.firstSkew(client) {
					s.log.Warn("a plugin outside the supported version window is in use", "plugin", client, "agent", agent, "supported", version.SupportedClients(agent))
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// version is the agent's version: Options.Version, else this binary's.
func (s *Server) version() string {
	if s.opts.Version != "" {
		return s.opts.Version
	}
	return version.Get().Version
}

// maxSkewLogged bounds the versions remembered by firstSkew: the header is the client's to
// choose, and must not grow the agent's memory.
const maxSkewLogged = 64

// firstSkew reports whether plugin version v is seen outside the window for the first time.
func (s *Server) firstSkew(v string) bool {
	s.skewMu.Lock()
	defer s.skewMu.Unlock()
	if s.skewLogged[v] || len(s.skewLogged) >= maxSkewLogged {
		return false
	}
	if s.skewLogged == nil {
		s.skewLogged = map[string]bool{}
	}
	s.skewLogged[v] = true
	return true
}
