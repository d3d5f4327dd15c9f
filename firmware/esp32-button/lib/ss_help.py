# The console's help text (ss_console cmd_help), a module of its own so that it is loaded only
# when someone types help.

import ssproto

HELP = (
    "Commands:",
    "  provision_set_wifi <ssid> <password>    stage WiFi credentials (\"\" = open network)",
    "  provision_set_device <device-id> <tenant> <building> <room>",
    "  provision_set_mqtt <mqtt[s]://host[:port]>  broker (default " + ssproto.DEFAULT_MQTT_URI + ")",
    "  provision_identity_csr                  make a key pair on the device; answers OK csr <base64 DER>",
    "  provision_set_cert <base64 DER>         the device certificate the tenant CA issued for that CSR",
    "  provision_set_ca <base64 DER>           the tenant CA certificate (verifies the broker)",
    "  provision_complete [--offline]          test WiFi and broker, then save to NVS and reboot",
    "                                          (--offline: save without the test)",
    "  provision_discard                       forget values not yet completed",
    "  provision_status                        show the configuration (never the password)",
    "  provision_verify <nonce>                check value of the stored password (for tools)",
    "  provision_reset --confirm               factory reset: erase credentials, reboot",
    "  provision clear                         the same as provision_reset --confirm",
    "  alert_test                              send a test alert (stored until the broker has it)",
    "  reboot                                  restart the device",
    "  ping [token]                            answers OK pong [token]",
    "  help                                    this list",
    "Quote arguments with spaces: \"My Network\"; inside quotes use \\\" and \\\\.",
)
