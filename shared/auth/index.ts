export { ANONYMOUS_ADMIN, METHOD_ROLES, ROLES, mayCall, rolesTable, type Caller, type Role } from './roles';
export { createAuthenticator, createGate, openGate } from './gate';
export type { Admission, Authenticator, CallCredentials, Gate } from './gate';
export { createIdentityLimiter, type IdentityLimiter } from './identity-limits';
