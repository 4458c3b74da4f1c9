package admin

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The client's side of the dashboard accounts, which the admin API
// manages under /v1/admin/users (the handlers are package dashboard's).

// UserRequest sets an account's password.
type UserRequest struct {
	Password string `json:"password"`
}

// UserInfo is an account as listed (never with its hash).
type UserInfo struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// UnlockReply says how many sign-in brakes were cleared.
type UnlockReply struct {
	Cleared int `json:"cleared"`
}

// Users lists the dashboard accounts.
func (c *Client) Users(ctx context.Context) ([]UserInfo, error) {
	var r []UserInfo
	return r, c.call(ctx, http.MethodGet, "/v1/admin/users", nil, &r)
}

// AddUser creates a dashboard account.
func (c *Client) AddUser(ctx context.Context, name, password string) error {
	return c.call(ctx, http.MethodPost, "/v1/admin/users/"+url.PathEscape(name), UserRequest{Password: password}, nil)
}

// SetPassword changes an account's password and ends its sessions.
func (c *Client) SetPassword(ctx context.Context, name, password string) error {
	return c.call(ctx, http.MethodPut, "/v1/admin/users/"+url.PathEscape(name), UserRequest{Password: password}, nil)
}

// RemoveUser deletes a dashboard account and ends its sessions.
func (c *Client) RemoveUser(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/admin/users/"+url.PathEscape(name), nil, nil)
}

// UnlockUser clears the sign-in brakes on a dashboard account.
func (c *Client) UnlockUser(ctx context.Context, name string) (int, error) {
	var r UnlockReply
	err := c.call(ctx, http.MethodPost, "/v1/admin/users/"+url.PathEscape(name)+"/unlock", struct{}{}, &r)
	return r.Cleared, err
}
