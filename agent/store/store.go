// Package store defines the agent's persistence contract: users, sessions, personal
// access tokens, encrypted credentials, audit events and settings. The database is the
// source of truth for which sessions should exist; pods only realise it.
//
// Backends live in sub-packages (sqlite, postgres) and must pass the conformance suite
// in storetest. Every backend maps its driver's errors onto the sentinel errors below so
// callers never see a driver type.
package store

import (
	"context"
	"errors"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Sentinel errors returned (possibly wrapped) by every backend.
var (
	// ErrNotFound: the row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique key already exists, or an update carried a stale ResourceVersion.
	ErrConflict = errors.New("conflict")
	// ErrQuotaExceeded: creating the session would exceed the owner's active-session limit.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrSchemaTooNew: the database was migrated by a newer binary than this one.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrInvalid: an argument is malformed (an unknown state, a tampered continue
	// token, a missing id); the caller should answer 400 rather than 500.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnavailable: the database cannot be reached (yet). Opening a store wraps
	// connection failures in it so the caller can retry; Ping wraps it too.
	ErrUnavailable = errors.New("database unavailable")
)

// User is a person or service account, keyed by (Source, Subject).
type User struct {
	ID          string
	Source      string // "header", "kubernetes", "token"
	Subject     string // email for header users, username for Kubernetes users
	Email       string
	DisplayName string
	Groups      []string
	Admin       bool
	CreatedAt   time.Time
	LastSeenAt  time.Time
}

// Session is the stored record of a session; see apiv1.Session for field meanings.
type Session struct {
	ID           string
	Title        string
	OwnerID      string
	Private      bool
	Repo         string
	Branch       string
	Prompt       string
	Model        string
	Persistent   bool
	IdleTimeout  time.Duration
	TTL          time.Duration
	State        apiv1.SessionState
	Reason       string
	Message      string
	PodName      string
	PodNamespace string
	// Image overrides (admin-permitted only); empty means the agent's configured images.
	Image     string
	InitImage string
	// OpenCodeSessionID is the id of the conversation created inside OpenCode once the
	// pod is ready; PromptSent records that the initial prompt was delivered, so a
	// restart never sends it twice.
	OpenCodeSessionID string
	PromptSent        bool
	// StartKind is how the session's first pod came to be (warm: claimed from the
	// pool; cold, the default: created for it). It is written at create only.
	StartKind apiv1.StartKind
	// ForkedFrom is the session this one was forked from ("" for none); its transcript
	// seeds this one's first conversation. Written at create only.
	ForkedFrom string

	CreatedAt          time.Time
	UpdatedAt          time.Time
	StartedAt          *time.Time
	StoppedAt          *time.Time
	LastActivityAt     time.Time
	LastActivitySource string
	// ResourceVersion is bumped by every UpdateSession; an update whose ResourceVersion
	// does not match the stored one fails with ErrConflict.
	ResourceVersion int64
}

// SessionFilter selects sessions for ListSessions. Zero fields do not filter.
type SessionFilter struct {
	// OwnerID keeps only sessions of this owner.
	OwnerID string
	// VisibleTo keeps sessions owned by this user id or not private.
	VisibleTo string
	// States keeps only sessions in one of these states.
	States []apiv1.SessionState
	// Limit is the page size (default 100, max 1000).
	Limit int
	// Continue is the opaque token from the previous page.
	Continue string
}

// SessionPage is one page of ListSessions, ordered by (CreatedAt, ID) ascending; the
// order is stable while rows are inserted.
type SessionPage struct {
	Items    []*Session
	Continue string
}

// Token is a personal access token; only a hash of the secret is ever stored.
type Token struct {
	ID         string
	OwnerID    string
	Name       string
	Hash       []byte // SHA-256 of the secret
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
}

// Credential is a secret a user linked (an API key, an OAuth token). Secret is the
// plaintext in memory only: backends store it encrypted with the Store's Keyring.
type Credential struct {
	OwnerID   string
	Provider  string
	Secret    []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ModelKey records a LiteLLM virtual key made for a session. The key itself lives only
// in the session's Secret; the row holds what deleting it (Alias) and reading its spend
// (Token, LiteLLM's hash of the key) need, so a restarted agent can do both.
type ModelKey struct {
	// Alias is the key's unique key_alias in LiteLLM.
	Alias     string
	SessionID string
	OwnerID   string
	// Token is LiteLLM's hash of the key ("" until the key was generated).
	Token string
	// Spend is the key's final spend in USD, recorded when it was deleted.
	Spend     float64
	CreatedAt time.Time
	// DeletedAt is set once the key was deleted in LiteLLM; nil means live (or maybe
	// made: a row is written before the key is generated).
	DeletedAt *time.Time
}

// ModelKeyFilter selects model keys for ListModelKeys. Zero fields do not filter.
type ModelKeyFilter struct {
	SessionID string
	// Live keeps only keys not yet deleted.
	Live bool
}

// SessionVCS is what a session's workspace was last seen on: the branch checked out
// and the pull request opened from it (empty: none found), as of CheckedAt.
type SessionVCS struct {
	SessionID      string
	Branch         string
	PullRequestURL string
	CheckedAt      time.Time
}

// Provider is one model provider an admin configured: its OpenCode provider JSON
// without the secret values (Config), and those values by field path (Secrets, e.g.
// "options.apiKey"). Secrets is plaintext in memory only: backends store it encrypted
// with the Store's Keyring, bound to the provider's ID.
type Provider struct {
	ID        string
	Config    []byte
	Secrets   map[string]string
	UpdatedAt time.Time
}

// IntegrationLink ties a conversation in an outside system (a Slack thread, a Linear
// issue) to the session started from it, keyed by (Source, ExternalID) so two deliveries
// of the same event cannot start two sessions. Data is JSON the integration owns (the
// Slack channel and status message, the Linear comment); the store never reads it.
type IntegrationLink struct {
	// Source names the integration: "slack", "linear".
	Source string
	// ExternalID is the conversation's id in Source (e.g. "C123:1712345678.000100").
	ExternalID string
	SessionID  string
	Data       []byte
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Transcript is the head of a session's recorded conversation: what deciding who may
// read it needs once the session row is gone (it outlives the session until the
// retention pruner removes it).
type Transcript struct {
	SessionID string
	OwnerID   string
	Private   bool
	Title     string
	Repo      string
	CreatedAt time.Time
	UpdatedAt time.Time
	// DeletedAt is when the session was deleted (nil while it exists); set by the
	// session's delete itself, so no delete leaves a transcript that is never pruned.
	DeletedAt *time.Time
}

// TranscriptMessage is one message of a transcript, keyed by (session, ID): recording
// the same message again replaces it, so a message recorded while it was still being
// written is completed by the next recording, never duplicated.
type TranscriptMessage struct {
	// ID is OpenCode's message id.
	ID   string
	Role string
	// Body is JSON the agent owns (an apiv1.Message); the store never reads it.
	Body      []byte
	CreatedAt time.Time
}

// AuditEvent is one audited decision.
type AuditEvent struct {
	ID        int64
	Time      time.Time
	Actor     string
	Action    string
	Target    string
	Outcome   string
	Detail    string
	RequestID string
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	Actor    string
	Target   string
	Limit    int
	Continue string
}

// AuditPage is one page of audit events.
type AuditPage struct {
	Items    []*AuditEvent
	Continue string
}

// Store is the persistence contract. All methods are safe for concurrent use.
type Store interface {
	// Ping checks the database is reachable.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error

	// UpsertUser creates the user keyed by (Source, Subject) or updates its email,
	// display name, groups, admin flag and LastSeenAt; it fills ID and CreatedAt.
	UpsertUser(ctx context.Context, u *User) error
	GetUser(ctx context.Context, id string) (*User, error)
	// FindUsers returns every user a person may be named by: ID or Subject equal to
	// name, or Email equal to it ignoring ASCII case (one person may be a header user and
	// a Kubernetes user). Ordered by CreatedAt, then ID; empty, not ErrNotFound, when none.
	FindUsers(ctx context.Context, name string) ([]*User, error)

	// CreateSession inserts s (ID set by the caller) with ResourceVersion 1. When
	// maxActive > 0 and the owner already has maxActive sessions in an active state it
	// fails with ErrQuotaExceeded; the check and insert are atomic. A duplicate ID is ErrConflict.
	CreateSession(ctx context.Context, s *Session, maxActive int) error
	GetSession(ctx context.Context, id string) (*Session, error)
	// UpdateSession writes every mutable field of s if s.ResourceVersion matches the
	// stored one, then increments s.ResourceVersion and sets UpdatedAt. A stale
	// version is ErrConflict; a missing row ErrNotFound.
	UpdateSession(ctx context.Context, s *Session) error
	// ActivateSession is UpdateSession for a write that moves s into an active state
	// (a start). When maxActive > 0 and the stored session is not active, it fails with
	// ErrQuotaExceeded if the owner already has maxActive active sessions; the check and
	// the write are atomic with the owner's creates and other activations, as in
	// CreateSession.
	ActivateSession(ctx context.Context, s *Session, maxActive int) error
	// TouchSession records activity (time and source) without bumping ResourceVersion;
	// it never moves LastActivityAt backwards.
	TouchSession(ctx context.Context, id string, at time.Time, source string) error
	DeleteSession(ctx context.Context, id string) error
	ListSessions(ctx context.Context, f SessionFilter) (*SessionPage, error)
	// CountSessions counts sessions by state (for metrics).
	CountSessions(ctx context.Context) (map[apiv1.SessionState]int, error)
	// LockSession takes the exclusive lock of session id, shared by every store opened
	// on the same database (every agent replica), and returns the function releasing it
	// (safe to call more than once). It waits while another holder has the lock, until
	// ctx ends. The lock serialises whole operations on a session — a row transition and
	// the Kubernetes calls that realise it — where a resource-version check alone only
	// serialises single writes. It does not need the row to exist (a create locks its id
	// before inserting). A holder must not take a second session lock, and a holder that
	// dies loses the lock: with Postgres it lives on a database connection, which the
	// server drops with the process.
	LockSession(ctx context.Context, id string) (unlock func(), err error)

	CreateToken(ctx context.Context, t *Token) error
	// GetTokenByHash finds a token by the hash of its secret.
	GetTokenByHash(ctx context.Context, hash []byte) (*Token, error)
	ListTokens(ctx context.Context, ownerID string) ([]*Token, error)
	// DeleteToken revokes a token of ownerID; ErrNotFound when it is not theirs.
	DeleteToken(ctx context.Context, ownerID, id string) error
	// DeleteUserTokens revokes every token of ownerID and returns how many it revoked
	// (0 for an owner without tokens or an unknown owner).
	DeleteUserTokens(ctx context.Context, ownerID string) (int, error)
	TouchToken(ctx context.Context, id string, at time.Time) error

	// PutCredential stores (or replaces) the credential encrypted at rest.
	PutCredential(ctx context.Context, c *Credential) error
	GetCredential(ctx context.Context, ownerID, provider string) (*Credential, error)
	// ListCredentials returns the owner's credentials without their secrets.
	ListCredentials(ctx context.Context, ownerID string) ([]*Credential, error)
	DeleteCredential(ctx context.Context, ownerID, provider string) error
	// RotateCredentials re-encrypts every credential and every provider's secrets with
	// the keyring's primary key and returns how many rows were rewritten.
	RotateCredentials(ctx context.Context) (int, error)

	// PutModelKey inserts k, or updates the Token, Spend and DeletedAt of the key with
	// its Alias (the session and owner of a key never change). An empty Alias, SessionID
	// or OwnerID is ErrInvalid.
	PutModelKey(ctx context.Context, k *ModelKey) error
	// ListModelKeys returns the keys f selects, ordered by CreatedAt, then Alias.
	ListModelKeys(ctx context.Context, f ModelKeyFilter) ([]*ModelKey, error)
	// DeleteModelKeys forgets the deleted keys of a session (live ones are kept, so a
	// key is never lost before it was deleted) and returns how many it forgot.
	DeleteModelKeys(ctx context.Context, sessionID string) (int, error)

	// GetSessionVCS returns what session id's workspace was last seen on (ErrNotFound:
	// never looked at).
	GetSessionVCS(ctx context.Context, id string) (*SessionVCS, error)
	// PutSessionVCS records v, replacing what was recorded for its session; it goes with
	// the session. A missing session is ErrNotFound, an empty SessionID ErrInvalid.
	PutSessionVCS(ctx context.Context, v *SessionVCS) error

	// ListProviders returns every configured model provider with its secrets, by ID
	// (empty, not ErrNotFound, when none is configured).
	ListProviders(ctx context.Context) ([]*Provider, error)
	// ReplaceProviders replaces the whole set of providers with ps in one transaction
	// (an empty ps removes them all) and fills their UpdatedAt. An empty or duplicate
	// ID is ErrInvalid.
	ReplaceProviders(ctx context.Context, ps []*Provider) error

	// RecordEvent remembers that an outside system delivered event eventID of source
	// (a Slack event_id, a Linear delivery id) and reports whether this is the first
	// delivery: false for a duplicate, so a retried delivery is acknowledged without
	// being handled twice. The session web UI's single-use sign-in links use it the same
	// way. Empty arguments are ErrInvalid.
	RecordEvent(ctx context.Context, source, eventID string) (first bool, err error)
	// PruneEvents forgets events recorded before the given time and returns how many.
	PruneEvents(ctx context.Context, before time.Time) (int, error)

	// CreateLink inserts l and fills its CreatedAt and UpdatedAt. An existing
	// (Source, ExternalID) is ErrConflict (the loser of two concurrent deliveries backs
	// off), a missing session ErrNotFound, an empty Source, ExternalID or SessionID
	// ErrInvalid. The link goes with its session.
	CreateLink(ctx context.Context, l *IntegrationLink) error
	// GetLink returns the link of (source, externalID) or ErrNotFound.
	GetLink(ctx context.Context, source, externalID string) (*IntegrationLink, error)
	// ListLinks returns the links of a session, ordered by CreatedAt, then Source and
	// ExternalID (empty, not ErrNotFound, when none).
	ListLinks(ctx context.Context, sessionID string) ([]*IntegrationLink, error)
	// UpdateLinkData replaces the Data of a link, if it is still old, and bumps its
	// UpdatedAt: a compare-and-swap, so of two agents (replicas, or a restart racing
	// its predecessor) about to post the same answer only the one whose swap succeeds
	// posts it. Data changed since old is ErrConflict; a missing link ErrNotFound.
	UpdateLinkData(ctx context.Context, source, externalID string, old, data []byte) error

	// PutTranscript records t's head (owner, privacy, title and repo replaced; created
	// on first use) and each of msgs, replacing a message with the same ID, in one
	// transaction; it fills t's times. A head created for a session that no longer
	// exists is created deleted now, so it is pruned like any other. An empty SessionID
	// or OwnerID, or a message without ID, is ErrInvalid.
	PutTranscript(ctx context.Context, t *Transcript, msgs []*TranscriptMessage) error
	// GetTranscript returns session id's transcript head and messages, ordered by
	// CreatedAt, then ID (ErrNotFound: nothing was ever recorded).
	GetTranscript(ctx context.Context, id string) (*Transcript, []*TranscriptMessage, error)
	// PruneTranscripts removes the transcripts of sessions deleted before the given
	// time and returns how many it removed.
	PruneTranscripts(ctx context.Context, deletedBefore time.Time) (int, error)

	AppendAudit(ctx context.Context, e *AuditEvent) error
	ListAudit(ctx context.Context, f AuditFilter) (*AuditPage, error)

	GetSetting(ctx context.Context, key string) (string, error)
	PutSetting(ctx context.Context, key, value string) error
}

// Migrator is implemented by every backend's store: it applies the embedded schema
// migrations (under a lock, so concurrent agents are safe) and reports the version.
// Opening a store migrates unless told not to; `agent migrate` uses this directly.
type Migrator interface {
	// SchemaVersion returns the version the database is at and the newest version
	// this binary knows. A current version above latest means a newer binary migrated it.
	SchemaVersion(ctx context.Context) (current, latest int, err error)
	// Migrate applies the missing migrations and returns their versions (none when the
	// database is up to date). A database newer than the binary is an error wrapping
	// ErrSchemaTooNew.
	Migrate(ctx context.Context) (applied []int, err error)
	// MigrateTo is Migrate stopping after version to: tests of upgrades from an earlier
	// release's schema build that schema with it.
	MigrateTo(ctx context.Context, to int) (applied []int, err error)
}
