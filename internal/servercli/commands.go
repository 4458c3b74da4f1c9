package servercli

import "github.com/tether-nbde/tether/internal/command"

// Commands are the commands tether-server has beyond tether's own. Each is
// made by a function beside its manual.
func Commands() []*command.Command {
	return []*command.Command{
		serverCmd(), // server.go
		serverKeysListCmd(),
		serverKeysRotateCmd(),
		serverKeysImportCmd(),
		serverKekSealCmd(), // kek.go
		serverKekUnsealCmd(),
		serverKekRotateCmd(),

		adminTokenCreateCmd(), // admin.go
		adminDeviceListCmd(),
		adminDeviceOpCmd("approve", "approve a pending enrolment"),
		adminDeviceOpCmd("enable", "let a device unlock again"),
		adminDeviceOpCmd("disable", "refuse a device's unlocks until enabled"),
		adminDeviceOpCmd("revoke", "destroy a device's key: its disks never unlock again"),
		adminDevicePolicyCmd(),
		adminGroupSetCmd(),
		adminLockdownCmd(),
		adminEnrollOpenCmd(),
		adminAuditVerifyCmd(),
		adminAuditExportCmd(),
		adminUnlockListCmd(),
		adminUnlockOpCmd("approve"),
		adminUnlockOpCmd("deny"),
		adminPCRListCmd(),
		adminPCROpCmd("approve"),
		adminPCROpCmd("deny"),
		adminResetCredentialsCmd(),

		adminUserPasswordCmd("add", "add a dashboard account (password from stdin or a prompt)"), // admin_user.go
		adminUserPasswordCmd("passwd", "change a dashboard account's password (ends its sessions)"),
		adminUserListCmd(),
		adminUserUnlockCmd(),
		adminUserRemoveCmd(),
	}
}
