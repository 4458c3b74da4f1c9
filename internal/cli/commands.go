package cli

import (
	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/command"
)

// commands are the commands of the tether binary, program being the
// binary's name (for "--version"). Each is made by a function beside its
// manual, in the file of its area.
func commands(program string) []*command.Command {
	cmds := []*command.Command{
		versionCmd(program),
		setupCmd(),
		doctorCmd(),
		discoverCmd(), // discover.go

		encryptCmd(), // crypt.go
		decryptCmd(),
		advCmd(),

		luksBindCmd(), // luks.go
		luksUnbindCmd(),
		luksPassCmd(),
		luksListCmd(),
		luksRepairCmd(),
		luksRegenCmd(),
		luksReportCmd(),
		luksUnlockCmd(),
		luksEncryptCmd(),
		luksCreateCmd(),
		luksRunCmd(), // boot.go

		keydCmd(), // boot.go
		askpassCmd(),
		crypttabCmd(),
		crypttabOpenCmd(),
		crypttabNeedsNetworkCmd(), // initramfs.go
		initramfsLocalTopCmd(),
		initramfsRetryCmd(),
		initramfsLocalBottomCmd(),

		secretOpenCmd(), // secret.go
		secretRegenCmd(),
		secretCloseCmd(),
		tpmSignPCRsCmd(),
		tpmExplainCmd(), // tpm_explain.go
		tpmHealCmd(),    // heal.go

		enrollCmd(), // managed mode
		agentCmd(),
		zfsSetupCmd(),
	}
	for _, target := range boot.Targets {
		cmds = append(cmds, installCmd(target)) // boot.go
	}
	return cmds
}
