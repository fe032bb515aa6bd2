# Registers the ops-toolkit tasks with Windows Task Scheduler from the XML files beside this script.
# Run in an elevated PowerShell:  .\register_tasks.ps1 -ToolkitDir C:\ops-toolkit -User svc-ops
# Task Scheduler captures no output: the tools log to OPS_LOG_FILE, set machine-wide
# (setx /M OPS_LOG_FILE C:\ops-toolkit\var\log\toolkit.log) together with OPS_DATABASE_URL.
param(
    [Parameter(Mandatory = $true)][string]$ToolkitDir,
    [Parameter(Mandatory = $true)][string]$User,
    [string]$Python = "python.exe"
)
$ErrorActionPreference = "Stop"
$password = Read-Host -AsSecureString "Password for $User"
$plain = [Runtime.InteropServices.Marshal]::PtrToStringAuto(
    [Runtime.InteropServices.Marshal]::SecureStringToBSTR($password))
Get-ChildItem -Path $PSScriptRoot -Filter "*.xml" | ForEach-Object {
    $xml = (Get-Content $_.FullName -Raw).Replace("{TOOLKIT_DIR}", $ToolkitDir).Replace("{PYTHON}", $Python)
    $name = "ops-toolkit\" + $_.BaseName
    Register-ScheduledTask -TaskName $name -Xml $xml -User $User -Password $plain -Force | Out-Null
    Write-Host "registered $name"
}
