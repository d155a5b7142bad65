package server

import (
	"net/http"
	"strings"

	"github.com/cakeai/cake-agents/pkg/version"
)

// openAPI serves an OpenAPI 3.1 description generated from the route table, so the
// document cannot drift from the routes the server actually has.
func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request) {
	paths := map[string]map[string]any{}
	for _, rt := range s.apiRoutes() {
		method, path, ok := strings.Cut(rt.pattern, " ")
		if !ok {
			method, path = "", rt.pattern
		}
		path = strings.ReplaceAll(path, "{rest...}", "{rest}")
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		op := map[string]any{
			"summary": rt.summary,
			"responses": map[string]any{
				"default": map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}},
			},
		}
		var params []any
		for _, p := range []string{"id", "rest"} {
			if strings.Contains(path, "{"+p+"}") {
				params = append(params, map[string]any{"name": p, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
			}
		}
		if params != nil {
			op["parameters"] = params
		}
		methods := []string{strings.ToLower(method)}
		if method == "" {
			methods = []string{"get", "post", "put", "patch", "delete"}
		}
		for _, m := range methods {
			paths[path][m] = op
		}
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "Cake Agents API", "version": version.Get().Version},
		"paths":   paths,
		"components": map[string]any{
			"schemas": map[string]any{
				"Error": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"error": map[string]any{"type": "object", "properties": map[string]any{
							"code": map[string]any{"type": "string"}, "message": map[string]any{"type": "string"},
						}},
					},
				},
			},
		},
	}
	writeJSON(w, http.StatusOK, doc)
}
