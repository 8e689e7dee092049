package api

import "slices"

// RegisteredMethods returns the full name of every method the gRPC server
// registers, sorted.
func (s *Server) RegisteredMethods() []string {
	var out []string
	for svc, info := range s.grpc.GetServiceInfo() {
		for _, m := range info.Methods {
			out = append(out, "/"+svc+"/"+m.Name)
		}
	}
	slices.Sort(out)
	return out
}

// HasPolicy reports whether the policy table has an entry for method.
func HasPolicy(method string) bool {
	_, ok := lookupPolicy(method)
	return ok
}
