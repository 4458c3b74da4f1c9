package servercli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/dashboard"
)

// uiServerFlags declares the dashboard flags of "tether server".
func uiServerFlags(fs *flag.FlagSet) func() dashboard.Config {
	on := fs.Bool("ui", true, "")
	idle := fs.Duration("ui-session-idle", 30*time.Minute, "")
	maxAge := fs.Duration("ui-session-max", 12*time.Hour, "")
	return func() dashboard.Config {
		return dashboard.Config{Off: !*on, SessionIdle: *idle, SessionMax: *maxAge}
	}
}

// readPassword reads a new password: from a prompt (twice, not echoed)
// when stdin is a terminal, else the first line of stdin. Never from argv.
func readPassword(env *command.Env, name string) (string, error) {
	if f, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(env.Stderr, "New password for %s: ", name)
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(env.Stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", errors.New("the passwords differ")
		}
		return string(a), nil
	}
	line, err := bufio.NewReader(io.LimitReader(env.Stdin, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", command.WithHint(errors.New("no password on stdin"), "pipe it in: tether admin user add %s < password-file", name)
	}
	return pw, nil
}

const adminUserUsage = `Usage: tether admin user add NAME < PASSWORD
       tether admin user passwd NAME < PASSWORD
       tether admin user list
       tether admin user remove NAME
       tether admin user unlock NAME

Manage the accounts that sign in to the dashboard (https://SERVER/ui/ on
the managed listener, docs/DASHBOARD.md). The password is read from a
prompt when stdin is a terminal, else from the first line of stdin; never
from the command line. It must be at least 10 characters. The server
stores only its argon2id hash. passwd and remove end the account's
sessions on every replica.

unlock clears the sign-in limits that failed sign-ins put on the account
(docs/DASHBOARD.md, "Sign-in rate limits"): its account-wide delay and its
per-address limits. They live in each replica's memory: behind a load
balancer, run it against each replica (--config with each one's URL).

On first start the server creates the account "admin" and writes its
random password 0600 to DATA/ui-admin.txt.

Examples:
  $ tether admin user add alice
  $ pwgen -s 20 1 | tee /dev/stderr | tether admin user passwd admin
`

func adminUserListCmd() *command.Command {
	return adminCmd("admin user list", "list dashboard accounts", adminUserUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				c, err := connect()
				if err != nil {
					return err
				}
				us, err := c.Users(context.Background())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tCREATED\tPASSWORD CHANGED")
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Created.Local().Format(time.DateTime), u.Updated.Local().Format(time.DateTime))
				}
				return tw.Flush()
			}
		})
}

func adminUserUnlockCmd() *command.Command {
	return adminCmd("admin user unlock", "clear the sign-in brakes on a dashboard account", adminUserUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want exactly one account name")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				n, err := c.UnlockUser(context.Background(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "account %s: %d sign-in brakes cleared on the server that answered\n", args[0], n)
				return nil
			}
		})
}

func adminUserRemoveCmd() *command.Command {
	return adminCmd("admin user remove", "remove a dashboard account (ends its sessions)", adminUserUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want exactly one account name")
				}
				c, err := connect()
				if err != nil {
					return err
				}
				if err := c.RemoveUser(context.Background(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "account %s removed\n", args[0])
				return nil
			}
		})
}

// adminUserPasswordCmd is "tether admin user add" or "passwd": both take a password.
func adminUserPasswordCmd(op, summary string) *command.Command {
	return adminCmd("admin user "+op, summary, adminUserUsage,
		func(fs *flag.FlagSet) func(*command.Env, adminConnect, []string) error {
			return func(env *command.Env, connect adminConnect, args []string) error {
				if len(args) != 1 {
					return command.Usagef("want exactly one account name (the password comes from stdin or a prompt, never the command line)")
				}
				if err := dashboard.ValidUserName(args[0]); err != nil {
					return command.Usagef("%v", err)
				}
				c, err := connect() // before the password is asked
				if err != nil {
					return err
				}
				pw, err := readPassword(env, args[0])
				if err != nil {
					return err
				}
				if len(pw) < dashboard.MinPasswordLength {
					return command.WithHint(fmt.Errorf("password is shorter than %d characters", dashboard.MinPasswordLength), "choose a longer one, e.g. four random words")
				}
				ctx := context.Background()
				if op == "add" {
					err = c.AddUser(ctx, args[0], pw)
					var ae *admin.Error
					if errors.As(err, &ae) && ae.Status == 409 {
						return command.WithHint(err, "change its password with tether admin user passwd %s", args[0])
					}
				} else {
					err = c.SetPassword(ctx, args[0], pw)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "account %s: password set\n", args[0])
				return nil
			}
		})
}
