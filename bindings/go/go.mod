module github.com/agentvm/agentvm/bindings/go

go 1.19
