# Install, update or uninstall Patina for the current user on Windows.
#
#   1. finds 64-bit Python 3.10 to 3.14 (py -3.12, -3.13, -3.11, -3.14, -3.10, then python on PATH;
#      a Microsoft Store Python works too),
#   2. creates a virtual environment next to the app (<app>\.venv), or in %LOCALAPPDATA%\Patina\venv when
#      the app folder is too deep for PyTorch's long file names (it asks first), or checks the existing one,
#   3. installs PyTorch: the CUDA build that fits the NVIDIA card and driver (packaging\pick_torch.py),
#      the CPU build without an NVIDIA card,
#   4. installs Patina and its libraries (pip install -e "<app>[captioning]"); on a re-run every library is upgraded,
#      while PyTorch is kept when the right build is installed (no multi-GB download),
#   5. creates "Patina" shortcuts in the Start menu and on the desktop (no console window: pythonw.exe;
#      when the window cannot start, Patina shows a message box and writes %LOCALAPPDATA%\Patina\launcher.log).
#
# Start it with install-windows.bat (double-click), or:
#   powershell -NoProfile -ExecutionPolicy Bypass -File install-windows.ps1 [-DryRun] [-Python C:\path\python.exe]
#       [-TorchIndex URL] [-Venv DIR] [-UpgradeTorch] [-Yes] [-NoDesktopShortcut] [-Uninstall]
# -DryRun prints the venv and pip commands instead of running them (nothing is downloaded).
# The decisions (which Python, where the venv goes, which PyTorch build) are made by win_setup.py and
# pick_torch.py, which exchange paths through UTF-8 files: user names with accents or any script are safe.
# The execution policy is only bypassed for this one process; nothing global is changed.
# (This file is ASCII on purpose: Windows PowerShell 5.1 reads scripts without a byte-order mark in the
# ANSI code page.)

param(
    [switch]$DryRun,
    [string]$Python = "",
    [string]$TorchIndex = "",
    [string]$Venv = "",
    [switch]$UpgradeTorch,
    [switch]$Yes,
    [switch]$NoDesktopShortcut,
    [switch]$Uninstall
)

$ErrorActionPreference = "Stop"
# Python prints and reads UTF-8, and the console shows it, whatever the system's ANSI code page.
$env:PYTHONUTF8 = "1"
$env:PYTHONIOENCODING = "utf-8"
try { [Console]::OutputEncoding = [System.Text.Encoding]::UTF8 } catch { }
$OutputEncoding = [System.Text.Encoding]::UTF8

$AppDir = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot "..")).Path
$Helper = Join-Path $AppDir "packaging\win_setup.py"
$Picker = Join-Path $AppDir "packaging\pick_torch.py"
$Icon = Join-Path $AppDir "resources\icons\patina.ico"
$LocalData = Join-Path ([Environment]::GetFolderPath("LocalApplicationData")) "Patina"
$PythonInstaller = "https://www.python.org/ftp/python/3.12.10/python-3.12.10-amd64.exe"
$Warnings = New-Object System.Collections.Generic.List[string]
$script:CreatedVenv = $false

function Say([string]$Text) { Write-Host "patina-install: $Text" }
function Warn([string]$Text) { Write-Host "patina-install: WARNING: $Text" -ForegroundColor Yellow; $Warnings.Add($Text) }
function Fail([string]$Text) {
    Write-Host "patina-install: error: $Text" -ForegroundColor Red
    exit 1
}

function Read-Json([string]$Path) {
    return ([System.IO.File]::ReadAllText($Path, [System.Text.Encoding]::UTF8) | ConvertFrom-Json)
}

function New-TempName([string]$Stem) {
    return Join-Path ([System.IO.Path]::GetTempPath()) ("patina-" + $Stem + "-" + [guid]::NewGuid().ToString("N") + ".json")
}

# A failed step: which one, what to try; a venv this run created is removed, an older one is kept.
function Invoke-Step([string]$What, [string]$Hint, [string]$Exe, [string[]]$Arguments) {
    if ($DryRun) {
        $shown = @($Exe) + $Arguments | ForEach-Object { if ($_ -match '\s') { '"' + $_ + '"' } else { $_ } }
        Write-Host ("would run: " + ($shown -join " "))
        return
    }
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) {
        $code = $LASTEXITCODE
        Write-Host ""
        Write-Host "patina-install: error: $What failed (exit code $code). $Hint" -ForegroundColor Red
        if ($CreatedVenv -and (Test-Path -LiteralPath $script:VenvDir)) {
            Remove-Item -LiteralPath $script:VenvDir -Recurse -Force -ErrorAction SilentlyContinue
            Write-Host "patina-install: the half-built environment $($script:VenvDir) was removed; run the installer again."
        } elseif (Test-Path -LiteralPath $script:VenvDir) {
            Write-Host "patina-install: the environment $($script:VenvDir) is unchanged or partly updated; running the installer again checks and completes it."
        }
        exit 1
    }
}

# Run a program and return its output lines (stdout and stderr) without PowerShell 5.1 turning its stderr
# lines into terminating errors; $LASTEXITCODE is its exit code.
function Invoke-Native([string]$Exe, [string[]]$Arguments) {
    $old = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        $out = @(& $Exe @Arguments 2>&1 | ForEach-Object { "$_" })
    } catch {
        $out = @("$_")
        $global:LASTEXITCODE = 1
    } finally {
        $ErrorActionPreference = $old
    }
    return $out
}

function Invoke-Probe([string]$Exe, [string[]]$Prefix) {
    $out = New-TempName "probe"
    try {
        Invoke-Native $Exe (@($Prefix) + @($Helper, "probe", $out)) | Out-Null
        if (($LASTEXITCODE -ne 0) -or -not (Test-Path -LiteralPath $out)) { return $null }
        return (Read-Json $out)
    } catch {
        return $null
    } finally {
        Remove-Item -LiteralPath $out -ErrorAction SilentlyContinue
    }
}

function Find-Python {
    $candidates = New-Object System.Collections.Generic.List[object]
    if ($Python) {
        $candidates.Add(@($Python, @()))
    } else {
        if (Get-Command py -ErrorAction SilentlyContinue) {
            foreach ($v in @("-3.12", "-3.13", "-3.11", "-3.14", "-3.10")) { $candidates.Add(@("py", @($v))) }
        }
        foreach ($name in @("python", "python3")) {
            $cmd = Get-Command $name -ErrorAction SilentlyContinue
            if ($cmd) { $candidates.Add(@($cmd.Source, @())) }
        }
    }
    $reasons = @()
    foreach ($c in $candidates) {
        $info = Invoke-Probe $c[0] $c[1]
        if ($null -eq $info) { continue }
        if ($info.ok) { return $info }
        $reasons += $info.reason
    }
    $found = ($reasons | ForEach-Object { "`n  found: $_" }) -join ""
    Fail ("Patina needs 64-bit Python 3.10 to 3.14.$found`nInstall Python 3.12 with this installer: " +
          "$PythonInstaller`n(in its first screen tick `"Add python.exe to PATH`"), then run install-windows.bat again.")
}

function Remove-Patina {
    $dirs = @((Join-Path $AppDir ".venv"), (Join-Path $LocalData "venv"))
    if ($Venv) { $dirs += $Venv }
    foreach ($lnk in @((Join-Path ([Environment]::GetFolderPath("Programs")) "Patina.lnk"),
                       (Join-Path ([Environment]::GetFolderPath("Desktop")) "Patina.lnk"))) {
        if (Test-Path -LiteralPath $lnk) {
            if ($DryRun) { Say "would remove: $lnk" } else { Remove-Item -LiteralPath $lnk -Force; Say "removed: $lnk" }
        }
    }
    foreach ($d in $dirs + @((Join-Path $LocalData "cache"), (Join-Path $LocalData "launcher.log"))) {
        if (-not (Test-Path -LiteralPath $d)) { continue }
        if (($dirs -contains $d) -and -not (Test-Path -LiteralPath (Join-Path $d "pyvenv.cfg"))) {
            Say "left $d alone: it is not a Python environment."
            continue
        }
        if ($DryRun) { Say "would remove: $d" } else { Remove-Item -LiteralPath $d -Recurse -Force; Say "removed: $d" }
    }
    Say "kept: your datasets, configs, LoRAs and samples (wherever you saved them)."
    Say "kept: Patina's settings and presets in $([Environment]::GetFolderPath('ApplicationData'))\Patina (delete that folder to forget them)."
    Say "the app folder $AppDir is still there; delete it to remove Patina completely."
    exit 0
}

if (-not (Test-Path -LiteralPath (Join-Path $AppDir "pyproject.toml"))) {
    Fail "run this script from Patina's packaging folder (no pyproject.toml in `"$AppDir`")."
}
if ($Uninstall) { Remove-Patina }

$PyInfo = Find-Python
$Py = $PyInfo.executable
Say "app folder:  $AppDir"
Say "Python:      $($PyInfo.reason)"

# Where the environment goes: next to the app unless PyTorch's long file names would not fit there.
$LongPaths = "0"
try {
    $LongPaths = [string](Get-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem" -Name LongPathsEnabled -ErrorAction Stop).LongPathsEnabled
} catch { $LongPaths = "0" }
$planFile = New-TempName "plan"
$planArgs = @($Helper, "plan-venv", $planFile, "--app-dir", $AppDir, "--local-app-data",
              [Environment]::GetFolderPath("LocalApplicationData"), "--long-paths", $LongPaths)
if ($Venv) { $planArgs += @("--venv", $Venv) }
& $Py @planArgs
if ($LASTEXITCODE -ne 0) { Fail "could not plan the environment folder (win_setup.py failed)." }
$Plan = Read-Json $planFile
Remove-Item -LiteralPath $planFile -ErrorAction SilentlyContinue
if (-not $Plan.ok) { Fail $Plan.message }
if ($Plan.ask) {
    Say $Plan.message
    if (-not $Yes) {
        $answer = Read-Host "Put the environment in $($Plan.venv)? [Y/n]"
        if ($answer -match '^\s*[nN]') { Fail "stopped. Move the Patina folder to a shorter path (e.g. C:\Patina) and run this again." }
    }
}
$script:VenvDir = $Plan.venv
$VenvPython = Join-Path $VenvDir "Scripts\python.exe"
$VenvPythonW = Join-Path $VenvDir "Scripts\pythonw.exe"
$Marker = Join-Path $VenvDir ".patina-install-complete"

# Which PyTorch build.
$Build = ""
if ($TorchIndex) {
    Say "PyTorch:     $TorchIndex (from -TorchIndex)"
    if ($TorchIndex -match '/whl/(cpu|cu\d+)/?$') { $Build = $Matches[1] }
} else {
    $gpuArgs = @()
    try {
        foreach ($name in (Get-CimInstance Win32_VideoController | ForEach-Object { $_.Name })) { $gpuArgs += @("--gpu-name", $name) }
    } catch { }
    $lines = Invoke-Native $Py (@($Picker, "--platform", "windows") + $gpuArgs)
    $rc = $LASTEXITCODE
    $pick = ""
    foreach ($line in $lines) {
        if ($line -match '^https?://\S+ \S+$') { $pick = $line } else { Say $line }
    }
    if (($rc -ne 0) -or -not $pick) { Fail "no PyTorch build fits this machine (see above)." }
    $parts = $pick.Trim() -split '\s+'
    $TorchIndex = $parts[0]
    $Build = $parts[1]
    if ($Build -eq "cpu") {
        Warn "PyTorch is the CPU build: training will be very slow. Patina trains on NVIDIA GPUs (CUDA); with one, install its driver and run this again."
    }
}
$NetHint = "Check the internet connection (pip downloads from https://pypi.org and https://download.pytorch.org) and the free disk space (the CUDA build needs about 5 GB); pip's message above names the package that failed."

# The environment: check an existing one, recreate a broken one, never delete a folder that is not a venv.
Say "environment: $VenvDir"
$needVenv = $true
if (Test-Path -LiteralPath $VenvDir) {
    $works = $false
    if (Test-Path -LiteralPath $VenvPython) {
        Invoke-Native $VenvPython @("-c", "import pip, sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 15) else 1)") | Out-Null
        $works = ($LASTEXITCODE -eq 0)
    }
    if ($works) {
        $needVenv = $false
        if (-not (Test-Path -LiteralPath $Marker)) { Say "             an earlier install did not finish; checking and completing it" }
    } elseif (Test-Path -LiteralPath (Join-Path $VenvDir "pyvenv.cfg")) {
        Say "             exists but does not work; recreating it"
        if (-not $DryRun) { Remove-Item -LiteralPath $VenvDir -Recurse -Force }
    } else {
        Fail "`"$VenvDir`" exists and is not a Python environment; move it away or pass -Venv."
    }
}
if ($needVenv) {
    $script:CreatedVenv = $true
    Invoke-Step "creating the environment" "Check the free disk space." $Py @("-m", "venv", $VenvDir)
}
Invoke-Step "updating pip" $NetHint $VenvPython @("-m", "pip", "install", "--upgrade", "pip")

# PyTorch: install, switch build, or keep.
# The installed torch and its build (from its version tag, or torch\version.py for PyPI's wheels).
$installed = ""
$installedBuild = ""
if (Test-Path -LiteralPath $VenvPython) {
    $info = Invoke-Native $VenvPython @($Picker, "--installed") | Select-Object -Last 1
    if ($LASTEXITCODE -eq 0) {
        $fields = ([string]$info).Trim() -split '\s+'
        $installed = $fields[0]
        if ($fields.Count -gt 1) { $installedBuild = $fields[1] }
    }
}
if (-not $installed) {
    Say "PyTorch:     installing from $TorchIndex"
    Invoke-Step "installing PyTorch" $NetHint $VenvPython @("-m", "pip", "install", "torch", "--index-url", $TorchIndex)
} elseif ($Build -and ($installedBuild -ne $Build)) {
    Say "PyTorch:     switching from $installed to the $Build build"
    Invoke-Step "removing the old PyTorch build" "Run the installer again." $VenvPython @("-m", "pip", "uninstall", "-y", "torch")
    Invoke-Step "installing PyTorch" $NetHint $VenvPython @("-m", "pip", "install", "torch", "--index-url", $TorchIndex)
} elseif ($UpgradeTorch) {
    Invoke-Step "upgrading PyTorch" $NetHint $VenvPython @("-m", "pip", "install", "--upgrade", "torch", "--index-url", $TorchIndex)
} else {
    Say "PyTorch:     $installed is installed and fits; kept (-UpgradeTorch upgrades it)"
}

# Patina and every other library, upgraded; PyTorch held at the installed version.
$constraints = New-TempName "constraints"
$torchNow = ""
if (-not $DryRun) {
    $torchNow = ([string](Invoke-Native $VenvPython @("-c", "from importlib.metadata import version; print(version('torch'))") | Select-Object -Last 1)).Trim()
    if ($LASTEXITCODE -ne 0) { $torchNow = "" }
}
[System.IO.File]::WriteAllText($constraints, $(if ($torchNow) { "torch==$torchNow`n" } else { "" }), (New-Object System.Text.UTF8Encoding($false)))
Invoke-Step "installing Patina and its libraries" $NetHint $VenvPython @("-m", "pip", "install", "--upgrade", "--upgrade-strategy", "eager", "-c", $constraints, "-e", ($AppDir + "[captioning]"))
Remove-Item -LiteralPath $constraints -ErrorAction SilentlyContinue

if (-not $DryRun) {
    if ($Build -and ($Build -ne "cpu")) {
        $check = Invoke-Native $VenvPython @("-c", "import torch; x = torch.ones(4, device='cuda'); print(torch.__version__, torch.cuda.get_device_name(0), float((x * 2).sum()))")
        if ($LASTEXITCODE -eq 0) { Say "CUDA check:  ok ($($check | Select-Object -Last 1))" }
        else { Warn "PyTorch cannot use the GPU: $(($check | Select-Object -Last 1)). Update the NVIDIA driver, then run this again." }
    }
    [System.IO.File]::WriteAllText($Marker, (Get-Date -Format o))
}

function New-PatinaShortcut([string]$Folder) {
    $path = Join-Path $Folder "Patina.lnk"
    if ($DryRun) { Write-Host "would create shortcut: $path"; return }
    $shell = New-Object -ComObject WScript.Shell
    $lnk = $shell.CreateShortcut($path)
    $lnk.TargetPath = $VenvPythonW
    $lnk.Arguments = "-m patina.gui.launcher"
    $lnk.WorkingDirectory = $AppDir
    $lnk.IconLocation = "$Icon,0"
    $lnk.Description = "Train Stable Diffusion LoRAs on your own GPU"
    $lnk.Save()
    Say "shortcut:    $path"
}

New-PatinaShortcut ([Environment]::GetFolderPath("Programs"))
if (-not $NoDesktopShortcut) { New-PatinaShortcut ([Environment]::GetFolderPath("Desktop")) }

if ($DryRun) { Say "dry run: nothing was downloaded or installed." }
else {
    Say "done. Start Patina from the Start menu or the desktop shortcut (or packaging\patina.bat)."
    Say "update: run install-windows.bat again; uninstall: packaging\uninstall-windows.bat"
}
# The warnings again, after pip's long output, so they are the last thing on screen.
foreach ($w in $Warnings) { Write-Host "patina-install: WARNING: $w" -ForegroundColor Yellow }
