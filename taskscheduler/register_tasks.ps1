# Registers ops-toolkit's tasks with Windows Task Scheduler from the XML files beside this script
# (generated from ops_lib/schedule.py by tools/manage_schedule.py: never edit them by hand).
# Idempotent: a re-run updates each task in place (-Force), never adds a second copy.
#   .\register_tasks.ps1 -ToolkitDir C:\ops-toolkit -User svc-ops -Python C:\Python311\python.exe
#   .\register_tasks.ps1 ... -Optional check_schema_drift   # enable optional jobs (name them on
#                                                            # every run: the list is the state)
#   .\register_tasks.ps1 ... -Service   # the scheduler service instead of one task per job
#   .\register_tasks.ps1 -Remove        # take every ops-toolkit task out
# Run it in an elevated PowerShell. Task Scheduler keeps no output: the tools log to
# OPS_LOG_FILE, set machine-wide (setx /M OPS_LOG_FILE C:\ops-toolkit\var\log\toolkit.log)
# together with OPS_DATABASE_URL. docs/scheduling.md has the rest.
[CmdletBinding(DefaultParameterSetName = "Register")]
param(
    [Parameter(Mandatory = $true, ParameterSetName = "Register")][string]$ToolkitDir,
    [Parameter(Mandatory = $true, ParameterSetName = "Register")][string]$User,
    [Parameter(ParameterSetName = "Register")][string]$Python = "python.exe",
    [Parameter(ParameterSetName = "Register")][string[]]$Optional = @(),
    [Parameter(ParameterSetName = "Register")][switch]$Service,
    [Parameter(Mandatory = $true, ParameterSetName = "Remove")][switch]$Remove
)
$ErrorActionPreference = "Stop"
$TaskPath = "\ops-toolkit\"

function Remove-Tasks([string[]]$Names) {
    foreach ($name in $Names) {
        if (Get-ScheduledTask -TaskPath $TaskPath -TaskName $name -ErrorAction SilentlyContinue) {
            Unregister-ScheduledTask -TaskPath $TaskPath -TaskName $name -Confirm:$false
            Write-Host "removed $TaskPath$name"
        }
    }
}

# Exactly the XML files present: one per job here, the scheduler service's in service\.
$jobFiles = @(Get-ChildItem -Path $PSScriptRoot -Filter "*.xml")
$serviceFiles = @(Get-ChildItem -Path (Join-Path $PSScriptRoot "service") -Filter "*.xml")

if ($Remove) {
    Remove-Tasks (($jobFiles + $serviceFiles) | ForEach-Object { $_.BaseName })
    return
}
$unknown = @($Optional | Where-Object { -not (Test-Path (Join-Path $PSScriptRoot "$_.xml")) })
if ($unknown.Count) { throw "no task XML for -Optional $($unknown -join ', ')" }

# One runner at a time: the service runs every job itself, so its task and the job tasks never
# coexist (each job would run twice).
if ($Service) {
    $register = $serviceFiles
    Remove-Tasks ($jobFiles | ForEach-Object { $_.BaseName })
} else {
    $register = $jobFiles
    Remove-Tasks ($serviceFiles | ForEach-Object { $_.BaseName })
}

$password = Read-Host -AsSecureString "Password for $User"
$plain = [Runtime.InteropServices.Marshal]::PtrToStringAuto(
    [Runtime.InteropServices.Marshal]::SecureStringToBSTR($password))
$toolkit = [System.Security.SecurityElement]::Escape($ToolkitDir)  # an & in a path stays XML
$pythonExe = [System.Security.SecurityElement]::Escape($Python)
foreach ($file in $register) {
    $xml = (Get-Content $file.FullName -Raw -Encoding UTF8).Replace("{TOOLKIT_DIR}", $toolkit).Replace("{PYTHON}", $pythonExe)
    Register-ScheduledTask -TaskPath $TaskPath -TaskName $file.BaseName -Xml $xml -User $User -Password $plain -Force | Out-Null
    # Optional jobs' XML says disabled; the ones named here are enabled (again, on a re-run).
    if ($Optional -contains $file.BaseName) {
        Enable-ScheduledTask -TaskPath $TaskPath -TaskName $file.BaseName | Out-Null
    }
    $state = (Get-ScheduledTask -TaskPath $TaskPath -TaskName $file.BaseName).State
    Write-Host "registered $TaskPath$($file.BaseName) ($state)"
}
