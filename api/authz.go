package api

import (
	"strconv"
	"strings"

	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// roleSet is a set of roles.
type roleSet uint8

func rolesOf(rs ...Role) roleSet {
	var s roleSet
	for _, r := range rs {
		s |= 1 << r
	}
	return s
}

func (s roleSet) has(r Role) bool { return s&(1<<r) != 0 }

var (
	anyone        = rolesOf(RoleEmitter, RoleSubject, RoleRegulator, RoleAdmin)
	overseers     = rolesOf(RoleRegulator, RoleAdmin)
	subjectReader = rolesOf(RoleSubject, RoleRegulator, RoleAdmin)
)

// policy is who may call one method and what that call may see. A method
// with no policy is denied to everyone (fail closed): adding a route means
// adding its line to policies.
type policy struct {
	// public methods need no credentials (health, reflection).
	public bool
	// roles may call the method; everyone else gets PERMISSION_DENIED.
	roles roleSet

	// subjectField is the request field that names one subject,
	// "subjects/{pseudonym}<subjectSuffix>" (or "subjects/me<suffix>" for a
	// data subject, rewritten to their pseudonym before the handler runs).
	// A data subject may name only themself.
	subjectField  protoreflect.Name
	subjectSuffix string

	// reasonRoles must say why they read (x-piledger-reason); the reason
	// goes into the access events.
	reasonRoles roleSet

	// access says how a successful call is recorded: one OPERATION_ACCESS
	// event per subject whose records it returned, for every caller but the
	// subject themself. nil: the method returns no person's records.
	access *accessRule

	// before checks (and may narrow) the request of a caller.
	before func(id *Identity, req proto.Message) error
	// after checks (and may redact) a unary response before it is sent.
	after func(id *Identity, resp proto.Message) error
}

// accessRule describes the access a method gives.
type accessRule struct {
	kind piledgerv1.AccessKind
	// emitterReason is the reason recorded for an emitter, who is not
	// asked for one (it reads its own holdings).
	emitterReason string
}

// policies is THE authorization table, keyed by full gRPC method name.
// TestEveryMethodHasAPolicy checks that every method the server registers
// has an entry; a method missing here is denied to every caller.
var policies = map[string]policy{
	// Health and reflection describe the service, not anybody's data.
	healthpb.Health_Check_FullMethodName:                                         {public: true},
	healthpb.Health_List_FullMethodName:                                          {public: true},
	healthpb.Health_Watch_FullMethodName:                                         {public: true},
	grpc_reflection_v1.ServerReflection_ServerReflectionInfo_FullMethodName:      {public: true},
	grpc_reflection_v1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: {public: true},

	// Emitters append, each as its own processor only.
	piledgerv1.LedgerService_AppendEvents_FullMethodName: {
		roles:  rolesOf(RoleEmitter),
		before: ownProcessorEvents,
	},
	// The decrypted log: every subject in it is recorded as accessed.
	piledgerv1.LedgerService_ListLogEntries_FullMethodName: {
		roles:       overseers,
		reasonRoles: overseers,
		access:      &accessRule{kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE},
	},

	// Resolving a reference returns its pseudonym; emitters do not learn
	// whether the ledger holds anything about the person (other processors'
	// events).
	piledgerv1.SubjectService_ResolveSubject_FullMethodName: {
		roles: rolesOf(RoleEmitter, RoleRegulator, RoleAdmin),
		after: redactRecordedForEmitters,
	},
	piledgerv1.SubjectService_GetDataMap_FullMethodName: {
		roles:         subjectReader,
		subjectField:  "name",
		subjectSuffix: "/datamap",
		reasonRoles:   overseers,
		access:        &accessRule{kind: piledgerv1.AccessKind_ACCESS_KIND_VIEW},
	},
	piledgerv1.SubjectService_ListSubjectEvents_FullMethodName: {
		roles:        subjectReader,
		subjectField: "parent",
		reasonRoles:  overseers,
		access:       &accessRule{kind: piledgerv1.AccessKind_ACCESS_KIND_VIEW},
	},
	piledgerv1.SubjectService_ExportSubject_FullMethodName: {
		roles:        rolesOf(RoleSubject, RoleAdmin),
		subjectField: "name",
		reasonRoles:  rolesOf(RoleAdmin),
		access:       &accessRule{kind: piledgerv1.AccessKind_ACCESS_KIND_COPY},
	},
	// Erasure: a data subject erases themself; an admin anyone, saying why.
	// It returns a receipt, no person's records.
	piledgerv1.SubjectService_EraseSubject_FullMethodName: {
		roles:        rolesOf(RoleSubject, RoleAdmin),
		subjectField: "name",
		reasonRoles:  rolesOf(RoleAdmin),
	},

	// Holdings due for destruction name subjects: an emitter sees its own,
	// and every read is recorded for each subject listed.
	piledgerv1.HoldingService_ListDueHoldings_FullMethodName: {
		roles:       rolesOf(RoleEmitter, RoleRegulator, RoleAdmin),
		before:      ownProcessorHoldings,
		reasonRoles: overseers,
		access: &accessRule{
			kind:          piledgerv1.AccessKind_ACCESS_KIND_VIEW,
			emitterReason: "processor review of its own holdings due for destruction",
		},
	},
	// Findings name subjects and show their holdings: an emitter sees those
	// about its own processing, and every read is recorded for each subject
	// listed.
	piledgerv1.FindingService_ListFindings_FullMethodName: {
		roles:       rolesOf(RoleEmitter, RoleRegulator, RoleAdmin),
		before:      ownProcessorFindings,
		reasonRoles: overseers,
		access: &accessRule{
			kind:          piledgerv1.AccessKind_ACCESS_KIND_VIEW,
			emitterReason: "processor review of the rule findings about its own processing",
		},
	},
	// Purpose holdings are counts per processor: nobody's records.
	piledgerv1.HoldingService_ListPurposeHoldings_FullMethodName: {roles: overseers},

	// Tamper evidence: checkpoints and proofs carry hashes and ciphertext,
	// never plaintext. An inclusion proof carries the event's clear header,
	// so subjects get their own events' and emitters their own processor's.
	piledgerv1.TransparencyService_GetCheckpoint_FullMethodName:       {roles: anyone},
	piledgerv1.TransparencyService_GetVerifierKey_FullMethodName:      {roles: anyone},
	piledgerv1.TransparencyService_GetConsistencyProof_FullMethodName: {roles: anyone},
	piledgerv1.TransparencyService_GetInclusionProof_FullMethodName: {
		roles: anyone,
		after: ownInclusionProof,
	},
	// The whole log as stored (ciphertext and clear headers) for offline
	// verification.
	piledgerv1.TransparencyService_ExportLog_FullMethodName: {roles: overseers},
}

// lookupPolicy returns the policy of a full method name.
func lookupPolicy(method string) (policy, bool) {
	p, ok := policies[method]
	return p, ok
}

// ownProcessorEvents: an emitter appends only as its own processor.
func ownProcessorEvents(id *Identity, req proto.Message) error {
	r, ok := req.(*piledgerv1.AppendEventsRequest)
	if !ok || id.Role != RoleEmitter {
		return nil
	}
	for i, e := range r.GetEvents() {
		if e.GetProcessor() != id.Processor {
			return denied(fieldIndex("events", i)+".processor", "is not the processor the caller's credentials are bound to")
		}
	}
	return nil
}

// ownProcessorHoldings: an emitter lists only its own holdings; an empty
// processor filter becomes its own.
func ownProcessorHoldings(id *Identity, req proto.Message) error {
	if r, ok := req.(*piledgerv1.ListDueHoldingsRequest); ok && id.Role == RoleEmitter {
		return ownProcessor(id, &r.Processor)
	}
	return nil
}

// ownProcessorFindings: an emitter lists only the findings about its own
// processor; an empty processor filter becomes its own.
func ownProcessorFindings(id *Identity, req proto.Message) error {
	if r, ok := req.(*piledgerv1.ListFindingsRequest); ok && id.Role == RoleEmitter {
		return ownProcessor(id, &r.Processor)
	}
	return nil
}

// ownProcessor sets an emitter's empty processor filter to its own
// processor and refuses any other.
func ownProcessor(id *Identity, filter *string) error {
	switch *filter {
	case "":
		*filter = id.Processor
	case id.Processor:
	default:
		return denied("processor", "is not the processor the caller's credentials are bound to")
	}
	return nil
}

// redactRecordedForEmitters clears ResolveSubjectResponse.recorded for
// emitters: whether the ledger holds anything about a person is other
// processors' business.
func redactRecordedForEmitters(id *Identity, resp proto.Message) error {
	if r, ok := resp.(*piledgerv1.ResolveSubjectResponse); ok && id.Role == RoleEmitter {
		r.Recorded = false
	}
	return nil
}

// ownInclusionProof lets a subject prove only their own events, and an
// emitter only its own processor's: the proof carries the event's clear
// header (pseudonym, operation, processor).
func ownInclusionProof(id *Identity, resp proto.Message) error {
	r, ok := resp.(*piledgerv1.InclusionProof)
	if !ok || (id.Role != RoleSubject && id.Role != RoleEmitter) {
		return nil
	}
	_, h, err := ledger.DecodeEnvelope(r.GetEnvelope())
	if err != nil {
		return denied("index", "names an event the caller may not see")
	}
	if id.Role == RoleSubject && h.GetPseudonym() != id.Pseudonym || id.Role == RoleEmitter && h.GetProcessor() != id.Processor {
		return denied("index", "names an event the caller may not see")
	}
	return nil
}

// subjectOf checks the subject-naming field of req for id, rewrites
// "subjects/me..." to the caller's pseudonym, and returns the pseudonym the
// request names.
func subjectOf(pol policy, id *Identity, req proto.Message) (string, error) {
	m := req.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(pol.subjectField)
	if fd == nil || fd.Kind() != protoreflect.StringKind {
		return "", denied("", "the request does not name a subject") // a policy bug: fail closed
	}
	field := fd.JSONName()
	name := m.Get(fd).String()
	rest, ok := strings.CutPrefix(name, "subjects/")
	if ok {
		rest, ok = strings.CutSuffix(rest, pol.subjectSuffix)
	}
	switch {
	case ok && rest == "me" && id.Role == RoleSubject:
		m.Set(fd, protoreflect.ValueOfString("subjects/"+id.Pseudonym+pol.subjectSuffix))
		return id.Pseudonym, nil
	case ok && rest == "me":
		return "", invalidRequest(field, "subjects/me stands for the caller's own records; only a data subject has them")
	case !ok || !crypto.IsPseudonym(rest):
		return "", invalidRequest(field, "must be subjects/{pseudonym}"+pol.subjectSuffix+" or subjects/me"+pol.subjectSuffix+", the pseudonym being 64 lowercase hex characters")
	case id.Role == RoleSubject && rest != id.Pseudonym:
		return "", denied(field, "names another subject: a data subject may read only their own records")
	}
	return rest, nil
}

// permissionError is a call the caller's role or identity may not make.
// field is the request field at fault, if any (a path, never a value).
type permissionError struct {
	field, description string
}

func (e *permissionError) Error() string {
	if e.field == "" {
		return "api: permission denied: " + e.description
	}
	return "api: permission denied: " + e.field + " " + e.description
}

func denied(field, description string) error {
	return &permissionError{field: field, description: description}
}

func fieldIndex(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}
