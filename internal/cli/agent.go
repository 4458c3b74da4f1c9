package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/pin/managed"
)

const agentUsage = `Usage: tether agent [--state DIR] [--interval D] [--once] [--close]

Send heartbeats to the managed server this machine enrolled with, every
--interval (default 1m), until SIGTERM. A device whose policy sets a
keep-alive timeout ("keepalive":"5m") and is not heard from for longer is
disabled by the server until an admin enables it again (the semantics of
Mandos): a machine that was stolen and switched off cannot come back and
unlock. Choose an interval well below the timeout.

A heartbeat does not re-enable a device that was disabled. Failures are
reported on stderr and retried at the next interval, except one: when the
server answers that it does not know the device (revoked, or enrolled
elsewhere), the agent stops with exit status 3.

tether install systemd installs it as tether-agent.service (the default
state directory; started at boot after network-online.target once the
machine is enrolled, restarted if it fails to start) and
tether-agent@.service for another state directory, named by the instance:
  $ systemctl enable --now tether-agent.service
  $ systemctl enable --now "tether-agent@$(systemd-escape --path /etc/tether/device-b).service"

Options:
  --state DIR     state directory (default $TETHER_DEVICE_DIR, else
                  /etc/tether/device)
  --interval D    time between heartbeats (default 1m)
  --once          send one heartbeat and exit (status 1 if it failed)
  --close         close the connection after each heartbeat. By default it
                  stays open, and the next beat skips the TLS handshake,
                  but each open connection costs the server about 56 KB.
                  For fleets of tens of thousands of devices, --close
                  trades that memory for one handshake per beat
                  (docs/MANAGED.md, boot storms)
`

func agentCmd() *command.Command {
	return &command.Command{
		Name:    "agent",
		Summary: "send keep-alive heartbeats to the managed server",
		Usage:   agentUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			state := fs.String("state", "", "")
			interval := fs.Duration("interval", time.Minute, "")
			closeConn := fs.Bool("close", false, "")
			once := fs.Bool("once", false, "")
			return func(env *Env, args []string) error {
				if len(args) > 0 {
					return command.Usagef("unexpected argument %q", args[0])
				}
				if *interval < time.Second {
					return command.Usagef("--interval must be at least 1s")
				}
				id, err := managed.LoadIdentity(deviceDir(env, *state))
				if err != nil {
					return err
				}
				c, err := id.Client("")
				if err != nil {
					return err
				}
				beat := func(ctx context.Context) error {
					ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
					defer cancel()
					if *closeConn {
						defer c.CloseIdle()
					}
					info, err := c.Heartbeat(ctx)
					var se *managed.ServerError
					if errors.As(err, &se) && se.Gone() {
						// Nothing is left to keep alive, and nothing will
						// be: stop, with a status the unit does not restart.
						return command.ExitError{Code: agentGone, Err: command.WithHint(fmt.Errorf("heartbeat: %w; stopping", err),
							"this device is revoked or unknown to the server: enrol again (tether enroll), then start the agent again")}
					}
					if err != nil {
						return err
					}
					if info.State != "enabled" {
						fmt.Fprintf(env.Stderr, "tether agent: device %s is %s %s\n", info.Device, info.State, info.Reason)
					}
					return nil
				}
				if *once {
					return beat(context.Background())
				}
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
				defer stop()
				t := time.NewTicker(*interval)
				defer t.Stop()
				for {
					err := beat(ctx)
					var gone command.ExitError
					if errors.As(err, &gone) {
						return err
					}
					if err != nil && ctx.Err() == nil {
						// Keep going: a missed beat is what keep-alive is for;
						// the next one may get through.
						fmt.Fprintf(env.Stderr, "tether agent: heartbeat failed: %v\n", err)
					}
					select {
					case <-ctx.Done():
						return nil
					case <-t.C:
					}
				}
			}
		},
	}
}

// agentGone is tether agent's exit status when the server no longer knows
// the device (tether-agent.service: RestartPreventExitStatus=).
const agentGone = 3
