module github.com/cakeai/cake-agents

go 1.26.0
